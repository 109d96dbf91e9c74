"""Push connectors against their local stand-ins, each beside a bare client doing the same work.

    python benchmarks/push_bench.py                          # fcm, apns, webpush
    python benchmarks/push_bench.py apns --requests 5000 --concurrency 100
    python benchmarks/push_bench.py fcm --firebase-admin     # + firebase-admin send_each(_async)
    python benchmarks/push_bench.py --quick                  # smoke mode (small counts)

Every stand-in runs in a separate process. In the same run, the connector sends N deliveries
at concurrency C, then a bare client loop sends the same requests (bodies, headers and tokens
built beforehand, outside the clock) at the same concurrency: aiohttp for FCM and Web Push,
httpx over HTTP/2 for APNs. It prints both rates and connector/bare (target: at least 0.8).
Web Push messages must each be encrypted (a fresh ECDH key per message), so the bare loop
encrypts inline too: the ratio is the connector's overhead, not the protocol's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import ssl
import statistics
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.base import Connector, Delivery, SendResult
from connectors.push.apns import ApnsConnector
from connectors.push.fcm import FcmConnector
from connectors.push.webpush import WebPushConnector, encrypt, parse_subscription
from notiflow.devservices.apns_api import ApnsApi
from notiflow.devservices.fcm_api import FcmApi, StaticTokenCredentials
from notiflow.devservices.webpush_api import WebPushApi

TARGET_RATIO = 0.8
SERVER_START_TIMEOUT_S = 20.0
ACCESS_TOKEN = "ya29.bench-token"
PROJECT = "notiflow-bench"
KEY_ID, TEAM_ID, TOPIC = "KEY0000001", "TEAM000001", "org.notiflow.bench"
SUBSCRIPTIONS = 200  # Web Push subscriptions, reused round-robin
Sample = tuple[float, float, int]  # wall seconds, client CPU seconds, successes


def _serve(kind: str, conn: Connection, setup: Any) -> None:
    """Child process: start the stand-in, report how to reach it, answer count requests."""
    server: Any
    if kind == "fcm":
        server, info = FcmApi(PROJECT, access_tokens={ACCESS_TOKEN}), None
    elif kind == "apns":
        server = ApnsApi(team_id=TEAM_ID, topic=TOPIC)
        server.trust(KEY_ID, serialization.load_pem_public_key(setup))
    else:
        server = WebPushApi()
    with server:
        if kind == "apns":
            info = server.ca_file
        elif kind == "webpush":
            info = [server.subscribe() for _ in range(SUBSCRIPTIONS)]
        conn.send((server.base_url, info))
        while (command := conn.recv()) != "stop":
            conn.send(server.count if command == "count" else None)


@contextmanager
def stand_in(kind: str, setup: Any = None) -> Iterator[tuple[str, Any, Callable[[], int]]]:
    """``(base_url, info, count)`` of a stand-in running in a child process."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(kind, child, setup), daemon=True)
    process.start()
    try:
        if not parent.poll(SERVER_START_TIMEOUT_S):
            raise TimeoutError(f"{kind} stand-in did not start")
        base_url, info = parent.recv()

        def count() -> int:
            parent.send("count")
            return int(parent.recv())

        yield base_url, info, count
        parent.send("stop")
    finally:
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)


def _deliveries(n: int, address: Callable[[int], str]) -> list[Delivery]:
    return [
        Delivery(
            notification_id=f"bench-{i}",
            tenant_id="bench",
            user_id=f"user-{i % 1000}",
            channel="push",
            address=address(i),
            subject="Your order has shipped",
            body="Hello! Your order #12345 has shipped and will arrive on Tuesday.",
            data={"order": "12345", "eta": "Tuesday"},
        )
        for i in range(n)
    ]


async def _timed_connector(connector: Connector, batch: list[Delivery], c: int) -> Sample:
    await connector.open()
    try:
        await connector.send_batch(batch[: max(1, len(batch) // 20)], c)  # warm-up, untimed
        start, cpu = time.perf_counter(), time.process_time()
        outcomes = await connector.send_batch(batch, c)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        await connector.close()
    failures = [o for o in outcomes if not isinstance(o, SendResult)]
    if failures:
        print(f"  {len(failures)} connector failures, first: {failures[0]!r}", file=sys.stderr)
    return elapsed, cpu, len(outcomes) - len(failures)


async def _timed_gather(calls: list[Callable[[], Awaitable[bool]]], c: int) -> Sample:
    gate = asyncio.Semaphore(c)

    async def one(call: Callable[[], Awaitable[bool]]) -> bool:
        async with gate:
            return await call()

    await asyncio.gather(*(one(call) for call in calls[: max(1, len(calls) // 20)]))  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(one(call) for call in calls))
    return time.perf_counter() - start, time.process_time() - cpu, sum(results)


async def _bare_aiohttp(requests: list[tuple[str, dict[str, str], bytes]], c: int) -> Sample:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

        def call(url: str, headers: dict[str, str], body: bytes) -> Callable[[], Awaitable[bool]]:
            async def post() -> bool:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    return 200 <= response.status < 300

            return post

        return await _timed_gather([call(*r) for r in requests], c)


async def _bare_httpx_h2(
    requests: list[tuple[str, dict[str, str], bytes]], c: int, verify: ssl.SSLContext
) -> Sample:
    async with httpx.AsyncClient(http2=True, verify=verify, timeout=30) as client:

        def call(url: str, headers: dict[str, str], body: bytes) -> Callable[[], Awaitable[bool]]:
            async def post() -> bool:
                return (await client.post(url, content=body, headers=headers)).status_code == 200

            return post

        return await _timed_gather([call(*r) for r in requests], c)


Timed = Callable[[], Sample]


def _measure(
    name: str,
    n: int,
    c: int,
    rounds: int,
    connector: Timed,
    bare: Timed,
    bare_name: str,
    count: Callable[[], int],
) -> bool:
    """Alternate connector and bare runs (the machine's load drifts); report the medians.

    Client CPU per message (this process only; the stand-in runs in another) is printed too:
    unlike throughput it barely moves when other work shares the machine.
    """
    samples: dict[str, list[tuple[float, float]]] = {"connector": [], "bare": []}
    complete = True
    for _ in range(rounds):
        for kind, run in (("connector", connector), ("bare", bare)):
            elapsed, cpu, ok = run()
            samples[kind].append((n / elapsed, cpu / n * 1e6))
            complete &= ok == n
    complete &= count() == 2 * rounds * (n + max(1, n // 20))
    (rate, cpu_us), (bare_rate, bare_cpu_us) = (
        (statistics.median(r for r, _ in s), statistics.median(u for _, u in s))
        for s in samples.values()
    )
    ratio = rate / bare_rate
    verdict = "ok" if ratio >= TARGET_RATIO else f"BELOW {TARGET_RATIO}"
    print(
        f"{name}: n={n} c={c} rounds={rounds}: connector {rate:,.0f} msg/s "
        f"({cpu_us:,.0f} us CPU/msg), {bare_name} {bare_rate:,.0f} req/s ({bare_cpu_us:,.0f} us "
        f"CPU/req); ratio {ratio:.2f} [{verdict}], CPU ratio {bare_cpu_us / cpu_us:.2f}; "
        f"all accepted: {complete}"
    )
    return complete


def bench_fcm(n: int, c: int, rounds: int) -> bool:
    with stand_in("fcm") as (base_url, _, count):
        credential = StaticTokenCredentials(lambda: ACCESS_TOKEN)
        connector = FcmConnector(PROJECT, credential, base_url=base_url, max_connections=c)
        batch = _deliveries(n, lambda i: f"fcm:bench-device-token-{i:08d}")
        headers = {"Authorization": f"Bearer {ACCESS_TOKEN}", "Content-Type": "application/json"}
        requests = [(connector.url, headers, connector.payload(d)) for d in batch]
        return _measure(
            "fcm",
            n,
            c,
            rounds,
            lambda: asyncio.run(_timed_connector(connector, batch, c)),
            lambda: asyncio.run(_bare_aiohttp(requests, c)),
            "bare aiohttp",
            count,
        )


def bench_apns(n: int, c: int, rounds: int) -> bool:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with stand_in("apns", public) as (base_url, ca_file, count):
        connector = ApnsConnector(key, KEY_ID, TEAM_ID, TOPIC, base_url=base_url, verify=ca_file)
        batch = _deliveries(n, lambda i: f"apns:{i:064x}")
        auth = {"authorization": f"bearer {connector.provider_token()}"}
        requests = [
            (
                f"{base_url}/3/device/{i:064x}",
                {**connector.headers(d), **auth},
                connector.payload(d),
            )
            for i, d in enumerate(batch)
        ]
        verify = ssl.create_default_context(cafile=ca_file)
        return _measure(
            "apns",
            n,
            c,
            rounds,
            lambda: asyncio.run(_timed_connector(connector, batch, c)),
            lambda: asyncio.run(_bare_httpx_h2(requests, c, verify)),
            "bare httpx h2",
            count,
        )


def bench_webpush(n: int, c: int, rounds: int) -> bool:
    with stand_in("webpush") as (_, subscriptions, count):
        vapid = ec.generate_private_key(ec.SECP256R1())
        connector = WebPushConnector(vapid, "mailto:bench@notiflow.local", max_connections=c)
        batch = _deliveries(n, lambda i: WebPushApi.address(subscriptions[i % SUBSCRIPTIONS]))
        prepared = []  # everything but the per-message encryption, done ahead
        for delivery in batch:
            url, headers, _ = connector.request(delivery)
            _, ua_public, peer, auth = parse_subscription(delivery.address.removeprefix("webpush:"))
            prepared.append(
                (str(url), headers, connector.plaintext(delivery), ua_public, peer, auth)
            )

        async def bare() -> Sample:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

                def call(url: str, headers: dict[str, str], *crypto: Any) -> Callable[[], Any]:
                    plaintext, ua_public, peer, auth = crypto

                    async def post() -> bool:
                        body = encrypt(plaintext, ua_public, auth, peer=peer)
                        async with session.post(url, data=body, headers=headers) as response:
                            await response.read()
                            return response.status == 201

                    return post

                return await _timed_gather([call(*p) for p in prepared], c)

        return _measure(
            "webpush",
            n,
            c,
            rounds,
            lambda: asyncio.run(_timed_connector(connector, batch, c)),
            lambda: asyncio.run(bare()),
            "bare aiohttp + encrypt",
            count,
        )


def bench_firebase_admin(n: int, c: int) -> None:
    """firebase-admin's own send paths against the same stand-in (FCM_URL is private: 7.7)."""
    import firebase_admin
    import requests.adapters
    from firebase_admin import credentials, messaging

    class _Credential(credentials.Base):
        def get_credential(self) -> StaticTokenCredentials:
            return StaticTokenCredentials(lambda: ACCESS_TOKEN)

    with stand_in("fcm") as (base_url, _, _count):
        messaging._MessagingService.FCM_URL = f"{base_url}/v1/projects/{{0}}/messages:send"
        app = firebase_admin.initialize_app(_Credential(), {"projectId": PROJECT}, name="bench")
        service = messaging._get_messaging_service(app)
        adapter = requests.adapters.HTTPAdapter(pool_connections=c, pool_maxsize=c)
        service._client.session.mount(base_url, adapter)  # same pool size as the connector
        notification = messaging.Notification("Your order has shipped", "Hello!")
        with warnings.catch_warnings():  # 7.7 deprecates ``token`` for ``fid``; FCM takes both
            warnings.simplefilter("ignore", DeprecationWarning)
            batch = [
                messaging.Message(token=f"bench-device-token-{i:08d}", notification=notification)
                for i in range(n)
            ]
        start, ok = time.perf_counter(), 0
        for i in range(0, n, c):  # send_each runs one thread per message of a call
            ok += messaging.send_each(batch[i : i + c], app=app).success_count
        rate = n / (time.perf_counter() - start)
        print(f"fcm firebase-admin send_each (chunks of {c}): {rate:,.0f} msg/s ({ok} ok)")

        async def run_async() -> int:
            sent = 0
            for i in range(0, n, c):
                sent += (await messaging.send_each_async(batch[i : i + c], app=app)).success_count
            return sent

        start = time.perf_counter()
        ok = asyncio.run(run_async())
        rate = n / (time.perf_counter() - start)
        print(f"fcm firebase-admin send_each_async (chunks of {c}): {rate:,.0f} msg/s ({ok} ok)")
        with contextlib.suppress(RuntimeError):  # its async client's loop is already closed
            firebase_admin.delete_app(app)


BENCHES = {"fcm": bench_fcm, "apns": bench_apns, "webpush": bench_webpush}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", choices=[*BENCHES, "all"], default="all")
    parser.add_argument("--requests", type=int, default=3000, help="sends per measurement")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed runs each")
    parser.add_argument("--firebase-admin", action="store_true", help="also time firebase-admin")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 100 sends, c=10, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.concurrency, args.rounds = 100, 10, 1
    complete = True
    for name, bench in BENCHES.items():
        if args.which in (name, "all"):
            complete &= bench(args.requests, args.concurrency, args.rounds)
    if args.firebase_admin:
        bench_firebase_admin(args.requests, args.concurrency)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
