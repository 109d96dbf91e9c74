"""Throughput of the SMS and voice connectors against their local stand-in APIs.

    python benchmarks/sms_bench.py                      # all: 3000 sends x 5 rounds, conc. 64
    python benchmarks/sms_bench.py twilio --sends 5000 --concurrency 100
    python benchmarks/sms_bench.py --quick              # smoke mode (small counts, 1 round)

Each provider's server runs in a separate process. Per provider, in the same run and at the
same concurrency, it times the connector (``send_batch``), a bare aiohttp loop POSTing the same
requests, and, for Twilio SMS, the twilio SDK's async client (``create_async`` over
``AsyncTwilioHttpClient``). Variants are interleaved over ``--rounds``; reported are median
rates, client CPU per send (``process_time``: the server is another process, so this is the
client's own cost and the steadier figure on a busy machine) and, per pair, the median (min-max)
of the per-round ratios. Exit status 1 when the server's count disagrees.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import aiohttp

from connectors.base import Connector, Delivery, SendResult
from connectors.sms.twilio import TwilioSmsConnector
from connectors.sms.vonage import VonageSmsConnector
from connectors.voice.twilio import TwilioVoiceConnector
from notiflow.devservices.twilio_api import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TwilioApi
from notiflow.devservices.vonage_api import TEST_API_KEY, TEST_API_SECRET, VonageApi

SERVER_START_TIMEOUT_S = 15.0
SENDER = "+15005550006"
BODY = "Your order #12345 has shipped and will arrive on Tuesday. Track it at example.org/t/42"


@dataclass
class Timing:
    """Wall-clock seconds, and CPU seconds of this (client) process: the server runs in
    another process, so ``cpu`` is the client's own cost, little disturbed by machine load."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Timing]:
    timing, wall, cpu = Timing(), time.perf_counter(), time.process_time()
    yield timing
    timing.wall, timing.cpu = time.perf_counter() - wall, time.process_time() - cpu


Run = Callable[[int, int], Awaitable[tuple[int, Timing]]]  # (n, concurrency) -> (ok, timing)


def _serve(kind: str, conn: Connection) -> None:
    """Child process: start the stand-in, send its port, answer count requests until stopped."""
    with TwilioApi() if kind == "twilio" else VonageApi() as server:
        conn.send(server.port)
        while (command := conn.recv()) != "stop":
            conn.send(server.count if command == "count" else None)


@contextmanager
def server_process(kind: str) -> Iterator[tuple[str, Callable[[], int]]]:
    """Yield ``(base_url, count)`` for a stand-in API in a child process."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(kind, child), daemon=True)
    process.start()
    try:
        if not parent.poll(SERVER_START_TIMEOUT_S):
            raise TimeoutError(f"{kind} server process did not start")
        port = parent.recv()

        def count() -> int:
            parent.send("count")
            return int(parent.recv())

        yield f"http://127.0.0.1:{port}", count
        parent.send("stop")
    finally:
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)


def _deliveries(n: int, channel: str) -> list[Delivery]:
    return [
        Delivery(f"bench-{i}", "bench", f"user-{i}", channel, f"+1415555{i % 10000:04d}", BODY)
        for i in range(n)
    ]


def _twiml(delivery: Delivery) -> str:
    return f'<Response><Say language="en-US">{escape(delivery.body)}</Say></Response>'


def _vonage_fields(delivery: Delivery) -> dict[str, str]:
    return {
        "api_key": TEST_API_KEY,
        "api_secret": TEST_API_SECRET,
        "from": "Notiflow",
        "to": delivery.address.removeprefix("+"),
        "text": delivery.body,
        "client-ref": delivery.notification_id,
    }


def connector_run(make: Callable[[], Connector], channel: str) -> Run:
    async def run(n: int, concurrency: int) -> tuple[int, Timing]:
        connector, deliveries = make(), _deliveries(n, channel)
        await connector.open()
        try:
            with timed() as timing:
                outcomes = await connector.send_batch(deliveries, concurrency)
        finally:
            await connector.close()
        return sum(isinstance(o, SendResult) for o in outcomes), timing

    return run


def bare_run(url: str, fields: Callable[[Delivery], dict[str, str]], auth: bool) -> Run:
    """The same POSTs from a plain aiohttp session (form-encoding ``fields`` of each delivery,
    reading the answer, nothing else): the ceiling a connector is held to."""

    async def run(n: int, concurrency: int) -> tuple[int, Timing]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if auth:
            headers["Authorization"] = aiohttp.encode_basic_auth(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        gate = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency), headers=headers
        ) as session:

            async def one(delivery: Delivery) -> bool:
                body = urlencode(fields(delivery)).encode()
                async with gate, session.post(url, data=body) as response:
                    await response.read()
                    return response.status < 300

            deliveries = _deliveries(n, "sms")
            with timed() as timing:
                ok = sum(await asyncio.gather(*(one(d) for d in deliveries)))
            return ok, timing

    return run


def sdk_run(base_url: str) -> Run:
    """The twilio SDK's async path: ``Client(http_client=AsyncTwilioHttpClient())``."""

    async def run(n: int, concurrency: int) -> tuple[int, Timing]:
        from twilio.base.exceptions import TwilioRestException
        from twilio.http.async_http_client import AsyncTwilioHttpClient
        from twilio.rest import Client

        http = AsyncTwilioHttpClient()  # its own ClientSession: aiohttp's default 100 sockets
        client = Client(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, http_client=http)
        client.api.base_url = base_url
        gate = asyncio.Semaphore(concurrency)

        async def one(delivery: Delivery) -> bool:
            async with gate:
                try:
                    await client.messages.create_async(
                        to=delivery.address, from_=SENDER, body=delivery.body
                    )
                except TwilioRestException:
                    return False
                return True

        deliveries = _deliveries(n, "sms")
        try:
            with timed() as timing:
                ok = sum(await asyncio.gather(*(one(d) for d in deliveries)))
            return ok, timing
        finally:
            await http.close()

    return run


def measure(
    variants: dict[str, Run], n: int, concurrency: int, rounds: int
) -> dict[str, list[Timing]]:
    """Timings per variant and round; variants interleave within each round (in a rotating
    order), so a round's ratios compare runs made under the same machine load."""
    timings: dict[str, list[Timing]] = {name: [] for name in variants}
    order = list(variants.items())
    for round_ in range(rounds):
        shift = round_ % len(order)  # rotate, so no variant always runs first
        for name, run in order[shift:] + order[:shift]:
            asyncio.run(run(min(concurrency, n), concurrency))  # warm-up (imports, sockets)
            ok, timing = asyncio.run(run(n, concurrency))
            if ok != n:
                print(f"  {name}: only {ok}/{n} succeeded", file=sys.stderr)
            timings[name].append(Timing(timing.wall / ok, timing.cpu / ok))  # per send
    return timings


def bench_twilio(n: int, concurrency: int, rounds: int) -> bool:
    with server_process("twilio") as (base, count):
        before = count()
        messages = f"{base}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
        calls = f"{base}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Calls.json"
        kw = {"sender": SENDER, "base_url": base, "max_connections": concurrency}
        timings = measure(
            {
                "twilio sms connector": connector_run(
                    lambda: TwilioSmsConnector(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, **kw), "sms"
                ),
                "twilio sdk create_async": sdk_run(base),
                "bare aiohttp (Messages)": bare_run(
                    messages, lambda d: {"To": d.address, "From": SENDER, "Body": d.body}, True
                ),
                "twilio voice connector": connector_run(
                    lambda: TwilioVoiceConnector(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, **kw), "voice"
                ),
                "bare aiohttp (Calls)": bare_run(
                    calls, lambda d: {"To": d.address, "From": SENDER, "Twiml": _twiml(d)}, True
                ),
            },
            n,
            concurrency,
            rounds,
        )
        received = count() - before
    _report(timings, "twilio sms connector", "bare aiohttp (Messages)")
    _report(timings, "twilio sdk create_async", "bare aiohttp (Messages)")
    _report(timings, "twilio sms connector", "twilio sdk create_async")
    _report(timings, "twilio voice connector", "bare aiohttp (Calls)")
    expected = 5 * rounds * (n + min(concurrency, n))
    print(f"  server accepted {received} of {expected}")
    return received == expected


def bench_vonage(n: int, concurrency: int, rounds: int) -> bool:
    with server_process("vonage") as (base, count):
        before = count()
        kw = {"sender": "Notiflow", "base_url": base, "max_connections": concurrency}
        timings = measure(
            {
                "vonage sms connector": connector_run(
                    lambda: VonageSmsConnector(TEST_API_KEY, TEST_API_SECRET, **kw), "sms"
                ),
                "bare aiohttp (sms/json)": bare_run(f"{base}/sms/json", _vonage_fields, False),
            },
            n,
            concurrency,
            rounds,
        )
        received = count() - before
    _report(timings, "vonage sms connector", "bare aiohttp (sms/json)")
    expected = 2 * rounds * (n + min(concurrency, n))
    print(f"  server accepted {received} of {expected}")
    return received == expected


def _report(timings: dict[str, list[Timing]], name: str, baseline: str) -> None:
    """Median rate and client CPU per send of both, and the median (min-max) of the
    per-round ratios ``name / baseline`` of rates (wall clock) and of CPU efficiency."""
    mine, theirs = timings[name], timings[baseline]
    walls = sorted(b.wall / a.wall for a, b in zip(mine, theirs, strict=True))
    cpus = sorted(b.cpu / a.cpu for a, b in zip(mine, theirs, strict=True))

    def rate(series: list[Timing]) -> str:
        wall = statistics.median(t.wall for t in series)
        cpu = statistics.median(t.cpu for t in series)
        return f"{1 / wall:6,.0f}/s {cpu * 1e6:4.0f}us cpu"

    print(f"  {name:24} {rate(mine)}  vs {baseline:24} {rate(theirs)}\n"
          f"  {'':24} ratio: rate {statistics.median(walls):.2f} ({walls[0]:.2f}-{walls[-1]:.2f})"
          f", cpu {statistics.median(cpus):.2f} ({cpus[0]:.2f}-{cpus[-1]:.2f})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", choices=["twilio", "vonage", "all"], default="all")
    parser.add_argument("--sends", type=int, default=3000, help="sends per variant and round")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 200 sends, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.sends, args.rounds = 200, 1
    ok = True
    print(f"{args.sends} sends x {args.rounds} rounds, concurrency {args.concurrency}")
    if args.which in ("twilio", "all"):
        print("twilio:")
        ok &= bench_twilio(args.sends, args.concurrency, args.rounds)
    if args.which in ("vonage", "all"):
        print("vonage:")
        ok &= bench_vonage(args.sends, args.concurrency, args.rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
