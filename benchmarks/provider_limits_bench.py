"""Throughput of the Redis provider limiter: one EVALSHA per acquire vs pipelined acquire_many.

    python benchmarks/provider_limits_bench.py                 # 3 s per mode
    python benchmarks/provider_limits_bench.py --seconds 5 --tasks 32 --batch 128
    python benchmarks/provider_limits_bench.py --quick         # smoke mode (0.2 s per mode)

Starts its own ``redis-server`` (a separate process, so it does not share our GIL). Limits are
set far above what one machine can ask for, so every call runs the whole Lua script and is
granted; the figure is acquisitions (script executions) per second. The unlimited mode shows
the local path (no round trip except the 50 ms pause probe).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from connectors.provider_limits import ProviderLimiter
from notiflow.devservices.redis_server import RedisServer, find_redis_server

HUGE = 1e12  # rate and burst: nothing is ever refused


async def _timed(
    seconds: float, tasks: int, step: Callable[[], Awaitable[int]]
) -> tuple[int, float]:
    """Run ``step`` in ``tasks`` concurrent loops for ``seconds``; (acquisitions, elapsed)."""
    deadline = time.perf_counter() + seconds

    async def loop() -> int:
        done = 0
        while time.perf_counter() < deadline:
            done += await step()
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(*(loop() for _ in range(tasks)))
    return sum(counts), time.perf_counter() - started


async def run_bench(url: str, seconds: float, tasks: int, batch: int) -> dict[str, float]:
    """Acquisitions per second for each mode, keyed by a readable mode name."""
    providers = [f"bench-{i}" for i in range(batch)]
    limiter = ProviderLimiter(url, {p: (HUGE, HUGE) for p in providers})
    await limiter.open()
    requests = dict.fromkeys(providers, 1)

    async def single() -> int:
        return (await limiter.acquire(providers[0], 1)).granted

    async def many() -> int:
        return sum(g.granted for g in (await limiter.acquire_many(requests)).values())

    async def unlimited() -> int:
        return (await limiter.acquire("not-limited", 1)).granted

    modes: list[tuple[str, int, Callable[[], Awaitable[int]]]] = [
        ("acquire, 1 task (unpipelined)", 1, single),
        (f"acquire, {tasks} tasks (unpipelined)", tasks, single),
        (f"acquire_many x{batch}, 1 task (pipelined)", 1, many),
        (f"acquire_many x{batch}, {tasks} tasks (pipelined)", tasks, many),
        ("acquire, unlimited provider, 1 task", 1, unlimited),
    ]
    results: dict[str, float] = {}
    try:
        for name, n_tasks, step in modes:
            await step()  # warm up: connection and script cache
            count, elapsed = await _timed(seconds, n_tasks, step)
            results[name] = count / elapsed
    finally:
        await limiter.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each mode")
    parser.add_argument("--tasks", type=int, default=16, help="concurrent asyncio tasks")
    parser.add_argument("--batch", type=int, default=64, help="providers per acquire_many")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 0.2 s per mode")
    args = parser.parse_args(argv)
    seconds = 0.2 if args.quick else args.seconds
    with RedisServer() as server:
        results = asyncio.run(run_bench(server.url, seconds, args.tasks, args.batch))
    print(f"provider limiter, {seconds:g} s per mode, {find_redis_server()}")
    for name, rate in results.items():
        print(f"  {name:<44} {rate:>12,.0f} acquisitions/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
