"""Build ``DeliveryEvent`` dicts (the wire shape of ``schemas.DeliveryEvent``) on the hot path.

Event ids are derived from what the event describes (notification, status, channel, address,
attempt, discriminator), so an outcome replayed after a crash carries the same id and
analytics count it once.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any


def stable_id(*parts: object) -> str:
    """A UUID-formatted id derived from ``parts`` (same parts → same id)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def iso_ms(epoch_ms: float) -> str:
    """Epoch milliseconds → ``2026-11-21T07:15:00.123Z``."""
    return _iso_whole_ms(int(epoch_ms))


@lru_cache(maxsize=65_536)
def _iso_whole_ms(epoch_ms: int) -> str:
    # memoised: a note's requested_at is formatted for every event about it, and the events
    # of one batch share their occurred_at millisecond
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(
    *,
    notification_id: str,
    tenant_id: str,
    user_id: str,
    status: str,
    requested_at_ms: float,
    now_ms: float,
    channel: str | None = None,
    provider: str | None = None,
    category: str | None = None,
    priority: str | None = None,
    reason: str | None = None,
    attempt: int = 0,
    latency_ms: float | None = None,
    discriminator: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One event dict; ``discriminator`` separates otherwise identical events (e.g. address)."""
    event = {
        "schema_version": 1,
        "event_id": stable_id(notification_id, status, channel, attempt, discriminator),
        "notification_id": notification_id,
        "tenant_id": tenant_id,
        "user_id": user_id,
        "status": status,
        "channel": channel,
        "provider": provider,
        "category": category,
        "priority": priority,
        "reason": reason,
        "attempt": attempt,
        "latency_ms": latency_ms,
        "requested_at": iso_ms(requested_at_ms),
        "occurred_at": iso_ms(now_ms),
    }
    event.update({k: v for k, v in extra.items() if v is not None})
    return event


def note_event(note: dict[str, Any], status: str, now_ms: float, **fields: Any) -> dict[str, Any]:
    """An event about a parsed notification (``operators.parse`` shape)."""
    return make_event(
        notification_id=note["id"],
        tenant_id=note["tenant_id"],
        user_id=note["user_id"],
        category=note["category"],
        priority=note["priority"],
        requested_at_ms=note["requested_at_ms"],
        now_ms=now_ms,
        status=status,
        campaign_id=note["metadata"].get("campaign_id"),
        variant=note["metadata"].get("variant"),
        strategy=note["metadata"].get("strategy"),
        **fields,
    )
