"""Account-wide provider limits shared by every worker and process, kept in Redis (>= 5.0).

Keys per provider, e.g. ``notiflow:limits:{twilio}:bucket`` (the braces are a Redis Cluster
hash tag: a provider's keys share a slot, so one script may touch both):

* ``…:bucket`` — token bucket (hash ``tokens``, ``ts`` µs) refilled at ``rate``/s up to ``burst``,
  changed atomically by one Lua script timed by ``redis.call('TIME')`` (workers' clocks never
  matter). It expires once it would be full again, so idle providers leave nothing behind.
* ``…:paused_until`` — set by ``pause()`` after a 429 (value: end in server ms, PX expiry, the
  later pause wins). While it exists every limiter grants 0 and reports the remaining pause as
  the wait. A pause also empties the bucket until it ends: sending resumes at the steady rate,
  not with a burst.

``acquire`` checks the pause and takes tokens in one round trip (one EVALSHA); ``acquire_many``
does so for many providers in one pipeline. Providers with no configured limit are granted in
full without Redis, but still honour pauses: their pause key is probed at most once per
``pause_cache_s`` (50 ms) per limiter, so a pause reaches them at most that late.

Failure policy: when Redis is unreachable or errs, calls that need it raise
``LimiterUnavailable`` (a ``RetryableError``, ``retry_after`` ≈ 1 s) rather than let everything
through (a stampede on the provider) or crash the worker; the dispatcher's retry policy waits
and tries again. Only the pause probe of *unlimited* providers fails open (the last pause seen
still holds), so a Redis outage does not stop channels that were never limited.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from connectors.base import RetryableError

__all__ = ["DEFAULT_KEY_PREFIX", "Grant", "LimiterUnavailable", "ProviderLimiter"]

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "notiflow:limits"
DEFAULT_PAUSE_CACHE_S = 0.05
DEFAULT_SOCKET_TIMEOUT_S = 1.0
DEFAULT_MAX_CONNECTIONS = 32
UNAVAILABLE_RETRY_AFTER_S = 1.0
#: Bucket state outlives the time to refill by this much before it expires.
BUCKET_TTL_MARGIN_MS = 1000
_NO_PAUSE = (0.0, 0.0)

# KEYS: bucket, paused_until. ARGV: rate (tokens/s), burst, tokens wanted, bucket TTL (ms).
# Returns {granted, wait_ms, paused}: wait_ms is 0 when all were granted, else the time to the
# next token or, when paused == 1, to the end of the pause. Tokens are stored rounded down.
ACQUIRE_LUA = """
local paused_ms = redis.call('PTTL', KEYS[2])
if paused_ms > 0 then return {0, paused_ms, 1} end
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now_us - ts) * rate / 1000000)
end
local granted = math.min(want, math.floor(tokens))
tokens = math.floor((tokens - granted) * 1000000) / 1000000
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'ts', string.format('%d', math.max(now_us, ts or 0)))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
local wait_ms = 0
if granted < want then
  wait_ms = math.ceil(((1 - tokens) * 1000000 / rate + math.max(0, (ts or 0) - now_us)) / 1000)
end
return {granted, wait_ms, 0}
"""

# KEYS: bucket, paused_until. ARGV: pause (ms), bucket TTL (ms; 0 = provider has no bucket).
# Keeps the later pause; a new pause also empties the bucket until it ends. Returns pause ms.
PAUSE_LUA = """
local ms = tonumber(ARGV[1])
local current = redis.call('PTTL', KEYS[2])
if current >= ms then return current end
local now = redis.call('TIME')
local until_us = tonumber(now[1]) * 1000000 + tonumber(now[2]) + ms * 1000
redis.call('SET', KEYS[2], string.format('%d', math.floor(until_us / 1000)), 'PX', ms)
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('HSET', KEYS[1], 'tokens', '0', 'ts', string.format('%d', until_us))
  redis.call('PEXPIRE', KEYS[1], ms + ttl)
end
return ms
"""


@dataclass(frozen=True, slots=True)
class Grant:
    """Tokens granted (0..n); ``wait_s`` > 0 only when fewer than asked: when to ask again."""

    granted: int
    wait_s: float = 0.0


class LimiterUnavailable(RetryableError):
    """The shared limiter (Redis) is unreachable or failed; retry after ``retry_after`` s."""

    def __init__(self, reason: str, *, retry_after: float = UNAVAILABLE_RETRY_AFTER_S) -> None:
        super().__init__(reason, retry_after=retry_after)


def _bucket_ttl_ms(rate: float, burst: float) -> int:
    """Long enough for an untouched bucket to refill: after that, no key == a full bucket."""
    return math.ceil(burst * 1000 / rate) + BUCKET_TTL_MARGIN_MS


class ProviderLimiter:
    """Global per-provider token buckets and 429 pauses, shared through one Redis.

    ``limits`` maps provider → ``(rate tokens/s, burst)``. Every worker must use the same
    numbers for a provider (the state is shared, the parameters travel with each call).
    No method sleeps: a short grant comes back with ``wait_s`` and the caller decides.
    """

    def __init__(
        self,
        redis_url: str,
        limits: Mapping[str, tuple[float, float]],
        key_prefix: str = DEFAULT_KEY_PREFIX,
        *,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pause_cache_s: float = DEFAULT_PAUSE_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for provider, (rate, burst) in limits.items():
            if not (rate > 0 and burst >= 1):
                raise ValueError(f"limit for {provider!r} needs rate > 0 and burst >= 1")
        self.redis_url = redis_url
        self.limits = {p: (float(rate), float(burst)) for p, (rate, burst) in limits.items()}
        self.key_prefix = key_prefix
        self.socket_timeout = socket_timeout
        self.max_connections = max_connections
        self.pause_cache_s = pause_cache_s
        self._clock = clock
        self._client: Redis | None = None
        # provider -> (checked at, paused until), local monotonic seconds
        self._pauses: dict[str, tuple[float, float]] = {}
        self._down = False  # Redis failed last time: log the outage once, and the recovery
        self._acquire: AsyncScript
        self._pause: AsyncScript

    # --- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the connection pool and preload the scripts (best effort: Redis may be down)."""
        if self._client is not None:
            return
        pool = BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=self.max_connections,
            timeout=self.socket_timeout,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout,
            retry=Retry(NoBackoff(), 1),  # one immediate retry replaces a stale pooled socket
        )
        self._client = Redis.from_pool(pool)
        self._acquire = self._client.register_script(ACQUIRE_LUA)
        self._pause = self._client.register_script(PAUSE_LUA)
        try:
            await self._client.script_load(ACQUIRE_LUA)
            await self._client.script_load(PAUSE_LUA)
        except RedisError as error:
            self._report_down("open", error)

    async def close(self) -> None:
        """Close the pool. The shared state stays in Redis."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # --- public API ------------------------------------------------------------------------
    async def acquire(self, provider: str, n: int = 1) -> Grant:
        """Take up to ``n`` tokens for ``provider`` (0 while it is paused); one round trip."""
        return (await self.acquire_many({provider: n}))[provider]

    async def acquire_many(self, requests: Mapping[str, int]) -> dict[str, Grant]:
        """``acquire`` for several providers at once, pipelined in one round trip.

        A pause this limiter already knows of is answered locally, without Redis.
        """
        client = self._require_open()
        now = self._clock()
        scripted: list[str] = []
        probed: list[str] = []
        for provider, n in requests.items():
            if n < 0:
                raise ValueError(f"cannot acquire {n} tokens for {provider!r}")
            if self._pauses.get(provider, _NO_PAUSE)[1] > now:
                continue
            if provider in self.limits:
                scripted.append(provider)
            elif self._pause_stale(provider, now):
                self._pauses[provider] = (now, self._pauses.get(provider, _NO_PAUSE)[1])
                probed.append(provider)
        replies: dict[str, object] = {}
        if len(requests) == 1 and scripted:  # the common case: EVALSHA, NOSCRIPT handled
            provider = scripted[0]
            try:
                replies[provider] = await self._acquire(
                    self._keys(provider), self._args(provider, requests)
                )
            except RedisError as error:
                raise self._unavailable("acquire", error) from error
            self._report_up()
        elif scripted or probed:
            replies = await self._pipeline(client, scripted, probed, requests)
        out: dict[str, Grant] = {}
        for provider, n in requests.items():
            reply: Any = replies.get(provider)
            if reply is not None and provider in self.limits:
                granted, wait_ms, paused = reply
                if paused:
                    self._note_pause(provider, now, wait_ms / 1000, checked=True)
                out[provider] = Grant(int(granted), int(wait_ms) / 1000)
                continue
            if reply is not None:  # a pause probe
                self._note_pause(provider, now, max(0, int(reply)) / 1000, checked=True)
            remaining = self._pauses.get(provider, _NO_PAUSE)[1] - now
            out[provider] = Grant(0, remaining) if remaining > 0 else Grant(n)
        return out

    async def pause(self, provider: str, seconds: float) -> float:
        """Stop every worker sending to ``provider`` for ``seconds`` (the later pause wins).

        Returns the pause now in force, in seconds. This limiter honours the pause locally
        even if Redis cannot be told (and then raises ``LimiterUnavailable``).
        """
        client = self._require_open()
        if seconds <= 0:
            return await self.paused_for(provider)
        now = self._clock()
        self._note_pause(provider, now, seconds)
        limit = self.limits.get(provider)
        ttl = _bucket_ttl_ms(*limit) if limit else 0
        try:
            ms = await self._pause(self._keys(provider), [math.ceil(seconds * 1000), ttl], client)
        except RedisError as error:
            raise self._unavailable("pause", error) from error
        self._report_up()
        self._note_pause(provider, now, ms / 1000, checked=True)
        logger.info("provider %s paused for %.3f s", provider, ms / 1000)
        return ms / 1000

    async def paused_for(self, provider: str) -> float:
        """Seconds left on ``provider``'s pause, 0.0 when not paused (always asks Redis)."""
        client = self._require_open()
        now = self._clock()
        try:
            ms = await client.pttl(self._keys(provider)[1])
        except RedisError as error:
            raise self._unavailable("paused_for", error) from error
        self._report_up()
        self._note_pause(provider, now, max(0, ms) / 1000, checked=True)
        return max(0, ms) / 1000

    # --- internals -------------------------------------------------------------------------
    def _require_open(self) -> Redis:
        if self._client is None:
            raise RuntimeError("ProviderLimiter is not open; call open() first")
        return self._client

    def _keys(self, provider: str) -> list[str]:
        base = f"{self.key_prefix}:{{{provider}}}"
        return [f"{base}:bucket", f"{base}:paused_until"]

    def _args(self, provider: str, requests: Mapping[str, int]) -> list[float | int]:
        rate, burst = self.limits[provider]
        return [rate, burst, requests[provider], _bucket_ttl_ms(rate, burst)]

    def _pause_stale(self, provider: str, now: float) -> bool:
        seen = self._pauses.get(provider)
        return seen is None or now - seen[0] >= self.pause_cache_s

    def _note_pause(self, provider: str, now: float, seconds: float, checked: bool = False) -> None:
        """Record a pause seen in Redis (``checked``: replaces) or set here (keeps the later)."""
        checked_at, until = self._pauses.get(provider, (now, 0.0))
        until = now + seconds if checked else max(until, now + seconds)
        self._pauses[provider] = (now if checked else checked_at, until)

    async def _pipeline(
        self, client: Redis, scripted: list[str], probed: list[str], requests: Mapping[str, int]
    ) -> dict[str, object]:
        """Scripts and pause probes in one pipeline, reloading the script on NOSCRIPT.

        With no scripts (only unlimited providers) a Redis error fails open: the probes
        report the last pause seen.
        """
        pending, probes, replies = list(scripted), list(probed), dict[str, object]()
        try:
            for _ in range(2):  # a second pass only after SCRIPT FLUSH / a Redis restart
                pipe = client.pipeline(transaction=False)
                for provider in pending:
                    args = self._args(provider, requests)
                    pipe.evalsha(self._acquire.sha, 2, *self._keys(provider), *args)
                for provider in probes:
                    pipe.pttl(self._keys(provider)[1])
                results = await pipe.execute(raise_on_error=False)
                replies.update(zip(pending + probes, results, strict=True))
                pending = [p for p in pending if isinstance(replies[p], NoScriptError)]
                if not pending:
                    break
                probes = []
                self._acquire.sha = await client.script_load(ACQUIRE_LUA)
            failed = next((r for r in replies.values() if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
        except RedisError as error:
            if scripted:
                raise self._unavailable("acquire_many", error) from error
            self._report_down("pause check", error)
            now = self._clock()
            return {p: int((self._pauses[p][1] - now) * 1000) for p in probed}
        self._report_up()
        return replies

    def _unavailable(self, operation: str, error: RedisError) -> LimiterUnavailable:
        self._report_down(operation, error)
        return LimiterUnavailable(f"limiter_unavailable: {type(error).__name__}: {error}")

    def _report_down(self, operation: str, error: RedisError) -> None:
        """Log an outage once (then at debug level), not once per call."""
        level = logging.DEBUG if self._down else logging.WARNING
        logger.log(level, "provider limiter: Redis %s failed: %r", operation, error)
        self._down = True

    def _report_up(self) -> None:
        if self._down:
            self._down = False
            logger.warning("provider limiter: Redis reachable again")
