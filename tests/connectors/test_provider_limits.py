"""ProviderLimiter against a real redis-server: shared token buckets, pauses, failure modes."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis

from connectors.base import RetryableError
from connectors.provider_limits import Grant, LimiterUnavailable, ProviderLimiter
from notiflow.devservices.redis_server import RedisServer

RATE, BURST = 200.0, 20.0
DRAIN_S = 1.5


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def provider() -> str:
    """A fresh provider name per test, so tests never share a bucket."""
    return f"p-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def opened(url: str, limits: dict, **kwargs: Any) -> AsyncIterator[ProviderLimiter]:
    limiter = ProviderLimiter(url, limits, **kwargs)
    await limiter.open()
    try:
        yield limiter
    finally:
        await limiter.close()


async def drain(
    limiter: ProviderLimiter, provider: str, tasks: int, seconds: float
) -> tuple[int, float, float]:
    """Ask for 3 tokens at a time from ``tasks`` tasks, honouring waits; (granted, start, end)."""
    start = time.monotonic()
    deadline = start + seconds

    async def worker() -> int:
        got = 0
        while time.monotonic() < deadline:
            grant = await limiter.acquire(provider, 3)
            got += grant.granted
            if grant.wait_s:
                await asyncio.sleep(min(grant.wait_s, max(0.0, deadline - time.monotonic())))
        return got

    counts = await asyncio.gather(*(worker() for _ in range(tasks)))
    return sum(counts), start, time.monotonic()


def check_within_limit(granted: int, elapsed: float) -> None:
    assert granted <= BURST + RATE * elapsed, (granted, elapsed)
    assert granted >= 0.6 * RATE * elapsed, f"limiter starves senders: {granted} in {elapsed}s"


def test_concurrent_tasks_never_exceed_rate(run, redis_server, provider) -> None:
    async def scenario() -> tuple[int, float, float]:
        async with opened(redis_server.url, {provider: (RATE, BURST)}) as limiter:
            return await drain(limiter, provider, tasks=4, seconds=DRAIN_S)

    granted, start, end = run(scenario())
    check_within_limit(granted, end - start)


def _drain_in_child(url: str, provider: str, barrier: Any, results: Any) -> None:
    async def main() -> tuple[int, float, float]:
        async with opened(url, {provider: (RATE, BURST)}) as limiter:
            await limiter.paused_for(provider)  # connected before the common start
            barrier.wait(30)
            return await drain(limiter, provider, tasks=4, seconds=DRAIN_S)

    results.put(asyncio.run(main()))


def test_processes_share_one_bucket(redis_server, provider) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    args = (redis_server.url, provider, barrier, results)
    children = [ctx.Process(target=_drain_in_child, args=args) for _ in range(2)]
    for child in children:
        child.start()
    try:
        barrier.wait(30)
        outcomes = [results.get(timeout=30) for _ in children]
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.terminate()
    granted = sum(g for g, _, _ in outcomes)
    elapsed = max(e for _, _, e in outcomes) - min(s for _, s, _ in outcomes)
    assert all(g > 0 for g, _, _ in outcomes), "both processes must get tokens"
    check_within_limit(granted, elapsed)


def test_partial_grant_and_accurate_wait(run, redis_server, provider) -> None:
    async def scenario() -> None:
        async with opened(redis_server.url, {provider: (10.0, 5.0)}) as limiter:
            first = await limiter.acquire(provider, 8)
            assert first == Grant(5, 0.1)  # bucket empty: next token in exactly 1/rate
            assert await limiter.acquire(provider, 3) == Grant(0, pytest.approx(0.1, abs=0.03))
            await asyncio.sleep(first.wait_s / 3)
            assert (await limiter.acquire(provider, 1)).granted == 0
            again = await limiter.acquire(provider, 1)
            await asyncio.sleep(again.wait_s)
            assert await limiter.acquire(provider, 1) == Grant(1, 0.0)

    run(scenario())


def test_pause_stops_every_limiter(run, redis_server, admin, provider) -> None:
    unlimited = f"{provider}-unlimited"

    async def scenario() -> None:
        limits = {provider: (RATE, BURST)}
        async with opened(redis_server.url, limits) as a, opened(redis_server.url, limits) as b:
            assert await a.pause(provider, 1.0) == pytest.approx(1.0, abs=0.01)
            await a.pause(unlimited, 1.0)
            for limiter in (a, b):
                grant = await limiter.acquire(provider, 5)
                assert grant.granted == 0 and 0.8 < grant.wait_s <= 1.0
                assert 0.8 < await limiter.paused_for(provider) <= 1.0
            many = await b.acquire_many({provider: 2, unlimited: 7, "other": 4})
            assert many[provider].granted == 0 and many[unlimited].granted == 0
            assert 0.8 < many[unlimited].wait_s <= 1.0
            assert many["other"] == Grant(4, 0.0)
            before = admin.info("stats")["total_commands_processed"]
            for _ in range(100):  # a pause already seen is answered without Redis
                assert (await b.acquire(provider, 1)).granted == 0
            assert admin.info("stats")["total_commands_processed"] - before <= 2

    run(scenario())


def test_later_pause_wins(run, redis_server, provider) -> None:
    async def scenario() -> None:
        async with opened(redis_server.url, {provider: (RATE, BURST)}) as limiter:
            assert await limiter.paused_for(provider) == 0.0
            await limiter.pause(provider, 2.0)
            assert await limiter.pause(provider, 0.5) > 1.9  # shorter pause is ignored
            assert await limiter.pause(provider, 0) > 1.9  # no-op, reports the pause
            await limiter.pause(f"{provider}-b", 0.5)
            assert await limiter.pause(f"{provider}-b", 2.0) == pytest.approx(2.0, abs=0.01)
            assert await limiter.paused_for(f"{provider}-b") > 1.9

    run(scenario())


def test_resumes_at_steady_rate_after_pause(run, redis_server, provider) -> None:
    async def scenario() -> None:
        async with opened(redis_server.url, {provider: (5.0, 10.0)}) as limiter:
            await limiter.pause(provider, 0.2)
            paused = await limiter.acquire(provider, 10)
            await asyncio.sleep(paused.wait_s)
            resumed = await limiter.acquire(provider, 10)
            assert resumed.granted <= 1, "a pause must not be followed by a full burst"
            await asyncio.sleep(resumed.wait_s)
            assert (await limiter.acquire(provider, 1)).granted == 1

    run(scenario())


def test_unlimited_provider_skips_redis_but_sees_pauses(run, redis_server, admin, provider):
    now = [100.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731

    async def scenario() -> None:
        async with (
            opened(redis_server.url, {}, clock=clock) as limiter,
            opened(redis_server.url, {}) as other,
        ):
            assert await limiter.acquire(provider, 1000) == Grant(1000, 0.0)  # probes once
            before = admin.info("stats")["total_commands_processed"]
            for _ in range(200):
                assert await limiter.acquire(provider, 1) == Grant(1, 0.0)
            assert admin.info("stats")["total_commands_processed"] - before <= 2  # INFO only
            await other.pause(provider, 5.0)
            now[0] += 0.01  # within the 50 ms cache: not seen yet
            assert (await limiter.acquire(provider, 1)).granted == 1
            now[0] += 0.05
            grant = await limiter.acquire(provider, 1)
            assert grant.granted == 0 and 4.5 < grant.wait_s <= 5.0

    run(scenario())
    assert admin.keys(f"*{provider}*:bucket") == []


def test_noscript_recovery_after_script_flush(run, redis_server, admin, provider) -> None:
    limits = {provider: (RATE, BURST), f"{provider}-2": (RATE, BURST)}

    async def scenario() -> None:
        async with opened(redis_server.url, limits) as limiter:
            assert (await limiter.acquire(provider, 1)).granted == 1
            admin.script_flush()
            assert (await limiter.acquire(provider, 1)).granted == 1
            admin.script_flush()
            many = await limiter.acquire_many({provider: 1, f"{provider}-2": 2, "free": 3})
            assert [g.granted for g in many.values()] == [1, 2, 3]
            many = await limiter.acquire_many({provider: 1, "free": 3})  # "free" is cached
            assert [g.granted for g in many.values()] == [1, 3]
            admin.script_flush()
            assert await limiter.pause(provider, 0.5) == pytest.approx(0.5, abs=0.01)

    run(scenario())


def test_keys_carry_ttls(run, redis_server, admin, provider) -> None:
    async def scenario() -> None:
        limits = {provider: (100.0, 50.0)}  # refills in 0.5 s -> TTL 0.5 s + 1 s margin
        async with opened(redis_server.url, limits, key_prefix="test:lim") as limiter:
            await limiter.acquire(provider, 1)
            await limiter.pause(f"{provider}-x", 3.0)

    run(scenario())
    assert 0 < admin.pttl(f"test:lim:{{{provider}}}:bucket") <= 1500
    assert 2900 < admin.pttl(f"test:lim:{{{provider}-x}}:paused_until") <= 3000
    assert admin.keys(f"notiflow:limits:*{provider}*") == []


def test_redis_down_raises_limiter_unavailable_then_recovers(run, provider) -> None:
    server = RedisServer().start()
    port = server.port

    async def expect_unavailable(call: Any) -> None:
        started = time.monotonic()
        with pytest.raises(LimiterUnavailable) as caught:
            await call
        assert time.monotonic() - started < 2.0
        assert isinstance(caught.value, RetryableError) and caught.value.retry_after == 1.0

    async def scenario() -> None:
        async with opened(server.url, {provider: (RATE, BURST)}) as limiter:
            assert (await limiter.acquire(provider, 1)).granted == 1
            server.stop()
            await expect_unavailable(limiter.acquire(provider, 1))
            await expect_unavailable(limiter.acquire_many({provider: 1, "free": 1}))
            await expect_unavailable(limiter.pause(f"{provider}-x", 1.0))
            await expect_unavailable(limiter.paused_for(provider))
            assert await limiter.acquire("free", 2) == Grant(2, 0.0)  # unlimited: fails open
            assert (await limiter.acquire(f"{provider}-x", 1)).granted == 0  # paused locally
            async with opened(server.url, {provider: (RATE, BURST)}) as late:  # open tolerates
                await expect_unavailable(late.acquire(provider, 1))
            with RedisServer(port=port):  # restarted: empty script cache, stale pool sockets
                assert (await limiter.acquire(provider, 1)).granted == 1
                assert (await limiter.acquire_many({provider: 1}))[provider].granted == 1

    try:
        run(scenario())
    finally:
        server.stop()


def test_invalid_use_is_refused(run, redis_server) -> None:
    with pytest.raises(ValueError):
        ProviderLimiter(redis_server.url, {"sms": (0.0, 10.0)})
    with pytest.raises(ValueError):
        ProviderLimiter(redis_server.url, {"sms": (10.0, 0.5)})

    async def scenario() -> None:
        limiter = ProviderLimiter(redis_server.url, {"sms": (10.0, 10.0)})
        with pytest.raises(RuntimeError):
            await limiter.acquire("sms", 1)
        await limiter.open()
        try:
            with pytest.raises(ValueError):
                await limiter.acquire("sms", -1)
        finally:
            await limiter.close()

    run(scenario())


def test_benchmark_smoke(run, redis_server) -> None:
    from benchmarks.provider_limits_bench import run_bench

    results = run(run_bench(redis_server.url, seconds=0.05, tasks=2, batch=4))
    assert len(results) == 5 and all(rate > 0 for rate in results.values())
