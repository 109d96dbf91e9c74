"""Throughput of the SMTP and webhook connectors against the local stand-in servers.

    python benchmarks/connectors_bench.py                    # both, default sizes
    python benchmarks/connectors_bench.py smtp --messages 2000 --pool 8
    python benchmarks/connectors_bench.py webhook --requests 5000 --concurrency 100
    python benchmarks/connectors_bench.py --quick             # smoke mode (small counts)

The server runs in a separate process by default (``--server process``) so it does not share
the client's GIL; ``--server thread`` runs it in-process, as the tests do. Every run checks
that the server received exactly what was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from connectors.base import Delivery, SendResult
from connectors.email.smtp import SmtpConnector
from connectors.webhook.standard import WebhookConnector
from notiflow.devservices import SmtpCatcher, WebhookReceiver

SECRET = "whsec_bm90aWZsb3ctZGV2LXNlY3JldA=="
SERVER_START_TIMEOUT_S = 15.0


def _make_server(kind: str) -> SmtpCatcher | WebhookReceiver:
    return SmtpCatcher() if kind == "smtp" else WebhookReceiver(secret=SECRET)


def _serve(kind: str, conn: Connection) -> None:
    """Child process: start the server, send its port, answer count requests until told to stop."""
    with _make_server(kind) as server:
        conn.send(server.port)
        while (command := conn.recv()) != "stop":
            conn.send(server.count if command == "count" else None)


@contextmanager
def running_server(kind: str, mode: str) -> Iterator[tuple[int, Callable[[], int]]]:
    """Yield ``(port, count)`` for a server in this process or a child process."""
    if mode == "thread":
        with _make_server(kind) as server:
            yield server.port, lambda: server.count
        return
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(kind, child))
    process.start()
    try:
        if not parent.poll(SERVER_START_TIMEOUT_S):
            raise TimeoutError(f"{kind} server process did not start")
        port = parent.recv()

        def count() -> int:
            parent.send("count")
            return int(parent.recv())

        yield port, count
        parent.send("stop")
    finally:
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)


def _deliveries(n: int, channel: str, address: Callable[[int], str]) -> list[Delivery]:
    return [
        Delivery(
            notification_id=f"bench-{i}",
            tenant_id="bench",
            user_id=f"user-{i % 1000}",
            channel=channel,
            address=address(i),
            subject="Your order has shipped",
            body="Hello! Your order #12345 has shipped and will arrive on Tuesday.",
            html="<p>Hello! Your order <b>#12345</b> has shipped.</p>"
            if channel == "email"
            else None,
            data={"order": 12345, "eta": "Tuesday"},
        )
        for i in range(n)
    ]


async def _run(connector: Any, deliveries: list[Delivery], concurrency: int) -> tuple[float, int]:
    await connector.open()
    try:
        start = time.perf_counter()
        outcomes = await connector.send_batch(deliveries, concurrency)
        elapsed = time.perf_counter() - start
    finally:
        await connector.close()
    failures = [o for o in outcomes if not isinstance(o, SendResult)]
    if failures:
        print(f"  {len(failures)} failures, first: {failures[0]!r}", file=sys.stderr)
    return elapsed, len(outcomes) - len(failures)


@dataclass(frozen=True)
class BenchResult:
    name: str
    sent: int
    received: int
    seconds: float
    detail: str

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.sent} sent, {self.received} received, {self.detail}: "
            f"{self.seconds:.2f}s = {self.rate:,.0f} msg/s"
        )


def bench_smtp(messages: int, pool: int, mode: str) -> BenchResult:
    with running_server("smtp", mode) as (port, count):
        connector = SmtpConnector("127.0.0.1", port, pool_size=pool, local_hostname="bench")
        batch = _deliveries(messages, "email", lambda i: f"user{i}@example.org")
        elapsed, ok = asyncio.run(_run(connector, batch, concurrency=pool * 4))
        received = count()
    detail = f"pool={pool}, {connector.connections_opened} connections, server={mode}"
    return BenchResult("smtp", ok, received, elapsed, detail)


def bench_webhook(requests: int, concurrency: int, mode: str) -> BenchResult:
    with running_server("webhook", mode) as (port, count):
        connector = WebhookConnector(SECRET, timeout=30, max_connections=concurrency)
        url = f"http://127.0.0.1:{port}/hook"
        batch = _deliveries(requests, "webhook", lambda _: url)
        elapsed, ok = asyncio.run(_run(connector, batch, concurrency=concurrency))
        received = count()
    detail = f"concurrency={concurrency}, server={mode}"
    return BenchResult("webhook", ok, received, elapsed, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", choices=["smtp", "webhook", "all"], default="all")
    parser.add_argument("--messages", type=int, default=2000, help="SMTP messages")
    parser.add_argument("--pool", type=int, default=8, help="SMTP pool size")
    parser.add_argument("--requests", type=int, default=5000, help="webhook POSTs")
    parser.add_argument("--concurrency", type=int, default=100, help="webhook concurrency")
    parser.add_argument("--server", choices=["process", "thread"], default="process")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 100 of each")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.requests = 100, 100
    results = []
    if args.which in ("smtp", "all"):
        results.append(bench_smtp(args.messages, args.pool, args.server))
        print(results[-1])
    if args.which in ("webhook", "all"):
        results.append(bench_webhook(args.requests, args.concurrency, args.server))
        print(results[-1])
    return 0 if all(r.sent == r.received for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
