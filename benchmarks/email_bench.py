"""Email connectors against local stand-ins running in a separate process.

    python benchmarks/email_bench.py                       # all, default sizes
    python benchmarks/email_bench.py sendgrid --requests 5000 --concurrency 64
    python benchmarks/email_bench.py smtp --messages 3000 --pool 8
    python benchmarks/email_bench.py smtp --no-pipelining    # the server offers no PIPELINING
    python benchmarks/email_bench.py smtp --rtt-ms 10        # through a proxy adding 10 ms RTT
    python benchmarks/email_bench.py --quick                # smoke mode (small counts)

HTTP providers (SendGrid, Mailgun): the connector's ``send_batch`` of N deliveries with
distinct content (so one request each) at concurrency C, and a bare aiohttp loop POSTing the
same bodies (built before the clock starts) at the same concurrency; the ratio is what the
connector keeps of the bare client's throughput (target ≥ 0.8). SendGrid is also run with
identical content, folded into 1,000-personalization requests. SMTP: ``SmtpConnector`` with a
connection pool against aiosmtpd (target ≥ 1,000 msg/s), with the client's and the server's
CPU per message; the server offers PIPELINING unless ``--no-pipelining``; ``--rtt-ms``
puts a proxy in front of it that delays each direction by half that (a remote relay).
Best of
``--repeat`` runs; every run checks the server received what was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from connectors.base import Connector, Delivery, SendResult
from connectors.email.mailgun import MailgunConnector
from connectors.email.sendgrid import SendGridConnector
from connectors.email.smtp import SmtpConnector
from notiflow.devservices.mailgun_api import MailgunApi
from notiflow.devservices.sendgrid_api import SendGridApi
from notiflow.devservices.smtp_catcher import SmtpCatcher

SG_KEY, MG_KEY, MG_DOMAIN = "SG.bench", "key-bench", "mg.bench.org"
SERVER_START_TIMEOUT_S = 15.0
SMTP_CONCURRENCY_PER_CONNECTION = 4


def _make_server(kind: str) -> SendGridApi | MailgunApi | SmtpCatcher:
    if kind == "sendgrid":
        return SendGridApi(SG_KEY)
    if kind == "mailgun":
        return MailgunApi(MG_KEY, MG_DOMAIN)
    return SmtpCatcher(pipelining=kind != "smtp-sequential")


class DelayProxy:
    """TCP proxy on loopback delaying every chunk by ``delay_s`` each way, in order (a
    network round trip of twice that), on its own event loop thread."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port, self.delay_s = target_port, delay_s
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(5)

    async def _listen(self) -> int:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Chunks are stamped when they arrive and written at stamp + delay, in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pump() -> None:
            try:
                while chunk := await reader.read(65536):
                    queue.put_nowait((loop.time() + self.delay_s, chunk))
            except OSError:
                pass
            queue.put_nowait((0.0, b""))

        pumping = asyncio.create_task(pump())
        try:
            while (item := await queue.get())[1]:
                await asyncio.sleep(max(0.0, item[0] - loop.time()))
                writer.write(item[1])
        finally:
            pumping.cancel()
            writer.close()


def _serve(kind: str, conn: Connection, rtt_ms: float = 0.0) -> None:
    """Child process: serve, send the port, answer ``count``/``clear``/``cpu`` (µs used so
    far) until ``stop``."""
    with _make_server(kind) as server:
        port = server.port
        if rtt_ms > 0:
            port = DelayProxy(port, rtt_ms / 2000).port
        conn.send(port)
        while (command := conn.recv()) != "stop":
            if command == "clear":
                server.clear()
            if command == "cpu":
                conn.send(int(time.process_time() * 1e6))
                continue
            count = server.messages if isinstance(server, SendGridApi) else server.count
            conn.send(count if command == "count" else 0)


@contextmanager
def server_process(kind: str, rtt_ms: float = 0.0) -> Iterator[tuple[int, Callable[[str], int]]]:
    """``(port, ask)`` for a stand-in in a child process; ``ask("count")`` / ``ask("clear")``."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(kind, child, rtt_ms), daemon=True)
    process.start()
    try:
        if not parent.poll(SERVER_START_TIMEOUT_S):
            raise TimeoutError(f"{kind} server process did not start")
        port = parent.recv()

        def ask(command: str) -> int:
            parent.send(command)
            return int(parent.recv())

        yield port, ask
        parent.send("stop")
    finally:
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)


def deliveries(n: int, *, distinct: bool = True) -> list[Delivery]:
    return [
        Delivery(
            notification_id=f"bench-{i}",
            tenant_id="bench",
            user_id=f"user-{i}",
            channel="email",
            address=f"user{i}@example.org",
            subject="Your order has shipped",
            body=f"Hello! Your order #{i if distinct else 12345} has shipped.",
            html=f"<p>Hello! Your order <b>#{i if distinct else 12345}</b> has shipped.</p>",
            category="orders",
        )
        for i in range(n)
    ]


async def run_connector(connector: Connector, batch: list[Delivery], concurrency: int) -> float:
    await connector.open()
    try:
        start = time.perf_counter()
        outcomes = await connector.send_batch(batch, concurrency)
        elapsed = time.perf_counter() - start
    finally:
        await connector.close()
    failed = [o for o in outcomes if not isinstance(o, SendResult)]
    if failed:
        raise RuntimeError(f"{len(failed)} failures, first: {failed[0]!r}")
    return elapsed


async def run_bare(
    url: str, bodies: list[bytes], headers: dict[str, str], concurrency: int
) -> float:
    """The floor: the same POSTs with nothing but aiohttp, same pool and concurrency."""
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=30),
    ) as session:

        async def one(body: bytes) -> None:
            async with gate, session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status >= 300:
                    raise RuntimeError(f"bare client got HTTP {response.status}")

        start = time.perf_counter()
        await asyncio.gather(*(one(body) for body in bodies))
        return time.perf_counter() - start


def _bodies(kind: str, connector: Any, batch: list[Delivery]) -> list[bytes]:
    if kind == "sendgrid":
        return [connector.payload(d, [connector.personalization(d)]) for d in batch]
    return [connector.encode(connector.form(d)) for d in batch]


def _timed(coro: Any) -> tuple[float, float]:
    """(wall seconds reported by ``coro``, client CPU seconds spent running it)."""
    cpu = time.process_time()
    wall = asyncio.run(coro)
    return wall, time.process_time() - cpu


def bench_http(kind: str, n: int, concurrency: int, repeat: int) -> float:
    """Connector vs bare aiohttp on the same stand-in; returns the throughput ratio.

    The stand-in is the bottleneck on a small machine, so wall-clock ratios are noisy; the
    client CPU per request (this process only) is printed too: it is the connector's cost.
    """
    with server_process(kind) as (port, ask):
        base = f"http://127.0.0.1:{port}"
        if kind == "sendgrid":
            connector: Any = SendGridConnector(
                SG_KEY, base_url=base, timeout=30, max_connections=concurrency
            )
        else:
            connector = MailgunConnector(
                MG_KEY, MG_DOMAIN, base_url=base, timeout=30, max_connections=concurrency
            )
        batch = deliveries(n)
        bodies, headers = _bodies(kind, connector, batch), dict(connector._headers)
        asyncio.run(run_bare(connector.url, bodies[:100], headers, concurrency))  # warm-up
        conn_runs, bare_runs = [], []
        for _ in range(repeat):  # interleaved, so drift in machine load hits both alike
            ask("clear")
            conn_runs.append(_timed(run_connector(connector, batch, concurrency)))
            bare_runs.append(_timed(run_bare(connector.url, bodies, headers, concurrency)))
            if (seen := ask("count")) != 2 * n:
                raise RuntimeError(f"{kind}: server saw {seen} of {2 * n} messages")
        conn_s, bare_s = min(w for w, _ in conn_runs), min(w for w, _ in bare_runs)
        conn_cpu = statistics.median(c for _, c in conn_runs) / n * 1e6
        bare_cpu = statistics.median(c for _, c in bare_runs) / n * 1e6
        print(
            f"{kind}: {n} sends, concurrency {concurrency}, best of {repeat}: "
            f"connector {n / conn_s:,.0f} req/s, bare aiohttp {n / bare_s:,.0f} req/s, "
            f"ratio {bare_s / conn_s:.2f}; client CPU {conn_cpu:.0f} vs {bare_cpu:.0f} µs/req "
            f"(ratio {bare_cpu / conn_cpu:.2f})"
        )
        if kind == "sendgrid":
            same = deliveries(n, distinct=False)
            folded = min(
                asyncio.run(run_connector(connector, same, concurrency)) for _ in range(repeat)
            )
            print(f"  sendgrid folded (identical content, ≤1000/request): {n / folded:,.0f} msg/s")
    return bare_s / conn_s


def bench_smtp(
    n: int, pool: int, repeat: int, pipelining: bool = True, rtt_ms: float = 0.0
) -> float:
    kind = "smtp" if pipelining else "smtp-sequential"
    with server_process(kind, rtt_ms) as (port, ask):
        rates, client_cpu, server_cpu = [], [], []
        for _ in range(repeat):
            ask("clear")
            connector = SmtpConnector("127.0.0.1", port, pool_size=pool, local_hostname="bench")
            server_before = ask("cpu")
            elapsed, cpu = _timed(
                run_connector(connector, deliveries(n), pool * SMTP_CONCURRENCY_PER_CONNECTION)
            )
            server_cpu.append((ask("cpu") - server_before) / n)
            if ask("count") != n:
                raise RuntimeError(f"smtp: server saw {ask('count')} of {n} messages")
            rates.append(n / elapsed)
            client_cpu.append(cpu / n * 1e6)
        print(
            f"smtp: {n} messages, pool {pool}, "
            f"{'PIPELINING offered' if pipelining else 'no PIPELINING'}, RTT +{rtt_ms:g} ms: "
            f"best {max(rates):,.0f} msg/s (median {statistics.median(rates):,.0f}, "
            f"{repeat} runs); CPU per message: client {statistics.median(client_cpu):.0f} µs, "
            f"server {statistics.median(server_cpu):.0f} µs"
        )
    return max(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = ["sendgrid", "mailgun", "smtp", "all"]
    parser.add_argument("which", nargs="?", choices=which, default="all")
    parser.add_argument("--requests", type=int, default=3000, help="HTTP sends per run")
    parser.add_argument("--concurrency", type=int, default=64, help="HTTP concurrency")
    parser.add_argument("--messages", type=int, default=3000, help="SMTP messages per run")
    parser.add_argument("--pool", type=int, default=8, help="SMTP connections")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    parser.add_argument(
        "--no-pipelining", action="store_true", help="SMTP server without PIPELINING"
    )
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="SMTP round trip added")
    parser.add_argument("--quick", action="store_true", help="smoke mode: small counts, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.messages, args.repeat = 200, 200, 1
    for kind in ("sendgrid", "mailgun"):
        if args.which in (kind, "all"):
            bench_http(kind, args.requests, args.concurrency, args.repeat)
    if args.which in ("smtp", "all"):
        bench_smtp(
            args.messages,
            args.pool,
            args.repeat,
            pipelining=not args.no_pipelining,
            rtt_ms=args.rtt_ms,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
