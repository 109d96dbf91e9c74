"""The send ledger: a delivery already sent is not sent again when the flow replays.

Keyed by notification id + channel + recipient address in Redis. Before a send the dispatcher
claims the key (``SET NX``); after the provider accepts, it confirms it with the provider,
attempt and message id. On a replay after a crash:

- ``sent``: skip the provider; the dispatcher re-emits the identical ``sent`` event (same
  event id, so analytics count it once);
- ``claimed``: claimed by a process that died before starting the send: sent (safe);
- ``sending``: the send had started when the process died, so the provider may or may not
  have accepted it. ``in_flight="resend"`` (default) sends it again — a lost notification is
  worse than a possible duplicate; ``in_flight="skip"`` reports it ``failed`` with the reason
  and dead-letters it instead (no duplicates), and keeps an ``unknown`` tombstone so later
  replays report the same failure rather than send. Counted as
  ``notiflow_ledger_unknown_total``;
- ``new``: send.

A final failure releases the claim, so a replay from the DLQ can try again. If Redis is
unavailable the ledger is skipped (sends continue, duplicates become possible, a metric
counts it): availability wins over exactly-once here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectors.base import Delivery
from notiflow import metrics

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 7 * 86400
NEW, SENT, CLAIMED, SENDING, UNKNOWN = "new", "sent", "claimed", "sending", "unknown"

# KEYS: ledger keys. ARGV[1]: ttl seconds. Returns, per key, "" (claimed now) or its value.
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value then
    out[i] = value
  else
    redis.call('SET', key, 'claimed', 'EX', ARGV[1])
    out[i] = ''
  end
end
return out
"""


class LedgerEntry(NamedTuple):
    state: str  # new | sent | claimed
    sent: dict[str, Any] | None = None  # the original sent event's fields, to re-emit it


def ledger_key(prefix: str, delivery: Delivery) -> str:
    address = hashlib.blake2b(delivery.address.encode(), digest_size=8).hexdigest()
    return f"{prefix}:{delivery.notification_id}:{delivery.channel}:{address}"


def _parse(value: bytes | str) -> LedgerEntry:
    raw = value.encode() if isinstance(value, str) else value
    if raw == b"":
        return LedgerEntry(NEW)
    if raw.startswith(b"{"):
        return LedgerEntry(SENT, orjson.loads(raw))
    return LedgerEntry({b"sending": SENDING, b"unknown": UNKNOWN}.get(raw, CLAIMED))


class SendLedger:
    """Async Redis ledger; one per worker event loop."""

    def __init__(
        self,
        url: str,
        ttl_s: int = DEFAULT_TTL_S,
        prefix: str = "notiflow:ledger",
        in_flight: str = "resend",
    ) -> None:
        if in_flight not in ("resend", "skip"):
            raise ValueError("in_flight must be 'resend' or 'skip'")
        self.in_flight = in_flight
        self.url = url
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._client: aioredis.Redis | None = None
        self._claim = None

    async def open(self) -> None:
        self._client = aioredis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        self._claim = self._client.register_script(_CLAIM)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def claim(self, deliveries: Sequence[Delivery]) -> list[LedgerEntry]:
        """Claim every delivery's key; return what each key held (``new`` if just claimed)."""
        if not deliveries:
            return []
        if self._client is None:
            await self.open()
        keys = [ledger_key(self.prefix, d) for d in deliveries]
        try:
            values = await self._claim(keys=keys, args=[self.ttl_s])
        except RedisError as error:
            metrics.LEDGER_UNAVAILABLE.inc()
            logger.warning(
                "send ledger unavailable; sending without it", extra={"error": str(error)}
            )
            return [LedgerEntry(NEW)] * len(deliveries)
        entries = [_parse(v) for v in values]
        unknown = sum(1 for e in entries if e.state == SENDING)
        if unknown:
            metrics.LEDGER_UNKNOWN.inc(unknown)
        return entries

    async def mark_sending(self, delivery: Delivery) -> None:
        """Record that the send is starting (its outcome is unknown until ``confirm``)."""
        await self._write([(ledger_key(self.prefix, delivery), b"sending")])

    async def confirm(self, confirmed: Sequence[tuple[Delivery, dict[str, Any]]]) -> None:
        """Mark deliveries sent, storing their ``sent`` event fields (one pipeline)."""
        await self._write(
            [(ledger_key(self.prefix, d), orjson.dumps(fields)) for d, fields in confirmed]
        )

    async def mark_unknown(self, deliveries: Sequence[Delivery]) -> None:
        """Record, for good, that these sends' outcomes are unknown and were not resent
        (``in_flight="skip"``): later replays report them failed again, never send them."""
        await self._write([(ledger_key(self.prefix, d), b"unknown") for d in deliveries])

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Forget claims of deliveries that failed for good (a DLQ replay may resend)."""
        await self._write([(ledger_key(self.prefix, d), None) for d in deliveries])

    async def _write(self, items: list[tuple[str, bytes | None]]) -> None:
        if not items or self._client is None:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    if value is None:
                        pipe.delete(key)
                    else:
                        pipe.set(key, value, ex=self.ttl_s)
                await pipe.execute()
        except RedisError as error:
            metrics.LEDGER_UNAVAILABLE.inc()
            logger.warning("send ledger write failed", extra={"error": str(error)})
