"""In-app inbox in Redis: one stream per user, an exact unread counter and a live channel.

Keys per user (``{t}:{u}`` = tenant and user id):

- ``notiflow:inbox:{t}:{u}`` — a stream, newest last, at most ``max_messages`` entries; fields
  ``id`` (notification id), ``title``, ``body``, ``data`` (JSON), ``category``, ``created_at``;
- ``notiflow:inbox:{t}:{u}:ids`` — a hash: notification id → stream entry id (``r:`` prefix
  once read), the index behind idempotency and read state, trimmed with the stream;
- ``notiflow:inbox:{t}:{u}:unread`` — the number of unread entries in the stream (exact);
- ``notiflow:inbox:{t}:{u}:live`` — a pub/sub channel; each new entry is published as JSON.

Each delivery is one Lua script call (atomic like MULTI/EXEC, but able to check first): a
notification id already in the hash returns its entry and changes nothing, so a replayed
delivery never adds a second entry or a second live message. Otherwise it XADDs, indexes,
increments the counter, trims the oldest entries (un-indexing them and uncounting the unread
ones) and PUBLISHes. A batch is one pipelined round trip of script calls.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from connectors.base import (
    Connector,
    ConnectorError,
    Delivery,
    InvalidRequest,
    Outcome,
    RetryableError,
    SendResult,
)

if TYPE_CHECKING:
    from notiflow.settings import Settings

__all__ = ["RedisInboxConnector", "inbox_key"]

log = logging.getLogger(__name__)

KEY_PREFIX = "notiflow:inbox"
READ_MARK = "r:"

#: KEYS: stream, unread, ids. ARGV: max entries, live channel, notification id, live JSON
#: (an object), then the stream fields. Returns {added (1/0), entry id, unread count}.
ADD_ENTRY = """
local known = redis.call('HGET', KEYS[3], ARGV[3])
if known then
  if string.sub(known, 1, 2) == 'r:' then known = string.sub(known, 3) end
  return {0, known, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local entry = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('HSET', KEYS[3], ARGV[3], entry)
local unread = redis.call('INCR', KEYS[2])
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if excess > 0 then
  for _, old in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)) do
    local f = old[2]
    for i = 1, #f, 2 do
      if f[i] == 'id' then
        local state = redis.call('HGET', KEYS[3], f[i + 1])
        if state and string.sub(state, 1, 2) ~= 'r:' then
          unread = redis.call('DECR', KEYS[2])
        end
        redis.call('HDEL', KEYS[3], f[i + 1])
        break
      end
    end
  end
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
end
redis.call('PUBLISH', ARGV[2],
  '{"entry_id":"' .. entry .. '","unread":' .. unread .. ',' .. string.sub(ARGV[4], 2))
return {1, entry, unread}
"""

#: KEYS: unread, ids. ARGV: notification ids. Returns {newly read, unread count}.
MARK_READ = """
local marked = 0
for i = 1, #ARGV do
  local state = redis.call('HGET', KEYS[2], ARGV[i])
  if state and string.sub(state, 1, 2) ~= 'r:' then
    redis.call('HSET', KEYS[2], ARGV[i], 'r:' .. state)
    marked = marked + 1
  end
end
local unread = tonumber(redis.call('GET', KEYS[1]) or '0')
if marked > 0 then
  unread = math.max(0, unread - marked)
  redis.call('SET', KEYS[1], unread)
end
return {marked, unread}
"""


def inbox_key(tenant_id: str, user_id: str) -> str:
    """The stream key of one user's inbox (other keys append ``:ids``, ``:unread``, ``:live``)."""
    return f"{KEY_PREFIX}:{tenant_id}:{user_id}"


class RedisInboxConnector(Connector):
    """Deliveries on channel ``in_app`` into per-user Redis inboxes; at-least-once input,
    exactly-once inbox entries (per notification id, while it is in the inbox)."""

    channel: ClassVar[str] = "in_app"
    provider: ClassVar[str] = "redis_inbox"
    max_batch_size: ClassVar[int] = 1000  # one pipelined round trip per batch

    DEFAULT_MAX_MESSAGES: ClassVar[int] = 1000
    DEFAULT_TIMEOUT_S: ClassVar[float] = 5.0
    DEFAULT_MAX_CONNECTIONS: ClassVar[int] = 32
    #: A pooled connection found dead is replaced once (safe: the add script is idempotent).
    CONNECTION_RETRIES: ClassVar[int] = 1

    def __init__(
        self,
        url: str,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if not url:
            raise ValueError("a Redis URL is required for the in-app inbox")
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.url, self.max_messages, self.timeout = url, max_messages, timeout
        self.max_connections = max_connections
        self._redis: redis.Redis | None = None
        self._add_sha = self._mark_sha = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisInboxConnector:
        return cls(settings.redis_url or "", max_messages=settings.inapp_max_messages)

    async def open(self) -> None:
        if self._redis is not None:
            return
        self._redis = redis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            max_connections=self.max_connections,
            retry=Retry(NoBackoff(), self.CONNECTION_RETRIES),
        )

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    # --- sending -------------------------------------------------------------------------
    async def send(self, delivery: Delivery) -> SendResult:
        outcome = (await self.send_batch([delivery], 1))[0]
        if isinstance(outcome, ConnectorError):
            raise outcome
        return outcome

    async def send_batch(self, deliveries: Sequence[Delivery], concurrency: int) -> list[Outcome]:
        """All deliveries in one pipelined round trip (``concurrency`` is not needed)."""
        outcomes: list[Outcome | None] = [None] * len(deliveries)
        calls: list[tuple[int, list[str], list[Any]]] = []
        for index, delivery in enumerate(deliveries):
            try:
                calls.append((index, *self._add_call(delivery)))
            except InvalidRequest as error:
                outcomes[index] = error
        try:
            results = await self._run_adds([(keys, args) for _, keys, args in calls])
        except (RedisError, OSError) as error:
            failure = RetryableError(f"redis_error: {type(error).__name__}: {error}")
            results = [failure] * len(calls)
        except Exception as error:  # a connector bug must not lose the batch
            bug = RetryableError(f"unexpected_error: {type(error).__name__}: {error}")
            results = [bug] * len(calls)
        for (index, _, _), result in zip(calls, results, strict=True):
            outcomes[index] = self._outcome(result)
        return [o if o is not None else RetryableError("not_attempted") for o in outcomes]

    def entry(self, delivery: Delivery) -> dict[str, str]:
        """The stream fields of ``delivery``'s inbox entry."""
        try:
            data = orjson.dumps(delivery.data, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError as error:  # orjson.JSONEncodeError subclasses TypeError
            raise InvalidRequest(f"unserializable_data: {error}") from error
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "id": delivery.notification_id,
            "title": delivery.subject or "",
            "body": delivery.body,
            "data": data,
            "category": delivery.category,
            "created_at": now,
        }

    # --- reading (for the gateway) -------------------------------------------------------
    async def read_inbox(
        self, tenant_id: str, user_id: str, count: int = 50, *, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Up to ``count`` entries, newest first (older than entry id ``before`` if given);
        each with ``entry_id``, the stream fields (``data`` parsed) and ``read``."""
        client = await self._client()
        key = inbox_key(tenant_id, user_id)
        try:
            top = f"({before}" if before else "+"
            rows = await client.xrevrange(key, top, "-", count=count)
            ids = [fields.get("id", "") for _, fields in rows]
            states = await client.hmget(f"{key}:ids", ids) if ids else []
        except (RedisError, OSError) as error:
            raise RetryableError(f"redis_error: {type(error).__name__}: {error}") from error
        entries = []
        for (entry_id, fields), state in zip(rows, states, strict=True):
            entry: dict[str, Any] = {"entry_id": entry_id, **fields}
            entry["data"] = orjson.loads(fields.get("data") or "{}")
            entry["read"] = bool(state and state.startswith(READ_MARK))
            entries.append(entry)
        return entries

    async def mark_read(self, tenant_id: str, user_id: str, ids: Sequence[str]) -> int:
        """Mark these notification ids read; returns how many were unread (idempotent)."""
        if not ids:
            return 0
        key = inbox_key(tenant_id, user_id)
        client = await self._client()
        try:
            marked, _ = await self._mark(client, [f"{key}:unread", f"{key}:ids"], ids)
        except (RedisError, OSError) as error:
            raise RetryableError(f"redis_error: {type(error).__name__}: {error}") from error
        return int(marked)

    async def unread_count(self, tenant_id: str, user_id: str) -> int:
        client = await self._client()
        try:
            return int(await client.get(f"{inbox_key(tenant_id, user_id)}:unread") or 0)
        except (RedisError, OSError) as error:
            raise RetryableError(f"redis_error: {type(error).__name__}: {error}") from error

    # --- internals -----------------------------------------------------------------------
    async def _client(self) -> redis.Redis:
        if self._redis is None:
            await self.open()
        if self._redis is None:  # pragma: no cover - open() always sets it
            raise RetryableError("redis_unavailable")
        return self._redis

    def _add_call(self, delivery: Delivery) -> tuple[list[str], list[Any]]:
        if not delivery.tenant_id or not delivery.user_id or not delivery.notification_id:
            raise InvalidRequest("missing_ids: tenant_id, user_id and notification_id needed")
        fields = self.entry(delivery)
        key = inbox_key(delivery.tenant_id, delivery.user_id)
        live = orjson.dumps(fields | {"data": delivery.data}, option=orjson.OPT_NON_STR_KEYS)
        flat = [item for pair in fields.items() for item in pair]
        keys = [key, f"{key}:unread", f"{key}:ids"]
        return keys, [self.max_messages, f"{key}:live", delivery.notification_id, live, *flat]

    async def _run_adds(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """EVALSHA each call in one pipeline; loads the script once if the server lacks it."""
        client = await self._client()
        if not calls:
            return []
        if not self._add_sha:
            self._add_sha = await client.script_load(ADD_ENTRY)
        results = await self._pipeline(client, calls)
        if any(isinstance(r, NoScriptError) for r in results):  # server restarted / flushed
            self._add_sha = await client.script_load(ADD_ENTRY)
            results = await self._pipeline(client, calls)
        return results

    async def _pipeline(
        self, client: redis.Redis, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self._add_sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)

    async def _mark(self, client: redis.Redis, keys: list[str], ids: Sequence[str]) -> Any:
        if not self._mark_sha:
            self._mark_sha = await client.script_load(MARK_READ)
        try:
            return await client.evalsha(self._mark_sha, len(keys), *keys, *ids)
        except NoScriptError:  # server restarted / script cache flushed
            self._mark_sha = await client.script_load(MARK_READ)
            return await client.evalsha(self._mark_sha, len(keys), *keys, *ids)

    @staticmethod
    def _outcome(result: Any) -> Outcome:
        if isinstance(result, Exception):
            return RetryableError(f"redis_error: {type(result).__name__}: {result}")
        added, entry_id, unread = result
        return SendResult(
            provider_message_id=str(entry_id),
            detail={"duplicate": not added, "unread": int(unread)},
        )

    def __repr__(self) -> str:
        return f"RedisInboxConnector(max_messages={self.max_messages})"
