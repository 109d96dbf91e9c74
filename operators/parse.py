"""Parse and validate raw request bytes into the internal notification dict, or reject them.

Every way a record can be unusable becomes a ``Rejection`` with a readable reason; the flow
sends it to the DLQ with the original bytes. Nothing is dropped.

The internal notification (a plain dict, cheap to pickle between workers)::

    {"id", "id_generated", "tenant_id", "user_id", "key", "category", "priority",
     "channels", "content", "template", "data", "recipient", "dedup_key",
     "send_at_ms", "expires_at_ms", "digest", "strategy", "metadata", "requested_at_ms", "source"}
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from operators.events import stable_id
from schemas.request import CampaignRequest, NotificationRequest

MAX_REASON_CHARS = 1000


class Campaign(NamedTuple):
    """A validated campaign request (``operators.campaign`` input shape) to split per user."""

    body: dict[str, Any]
    source: str


class Rejection(NamedTuple):
    """A record that cannot become a notification. ``kind`` is one of the ``KIND_*`` names."""

    kind: str
    reason: str
    source: str  # "topic/partition/offset"
    timestamp_ms: int
    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    tenant_id: str = "unknown"
    user_id: str = "unknown"
    notification_id: str | None = None


KIND_EMPTY = "empty"
KIND_OVERSIZED = "oversized"
KIND_NOT_JSON = "not_json"
KIND_INVALID = "invalid"
KIND_SOURCE_ERROR = "source_error"


def user_key(tenant_id: str, user_id: str) -> str:
    """The partitioning key: every stateful decision is per tenant × user."""
    return f"{tenant_id}/{user_id}"


def describe_validation_error(error: ValidationError) -> str:
    """``recipient.user_id: Field required; priority: Input should be ...``."""
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(p) for p in item["loc"]) or "(request)"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)[:MAX_REASON_CHARS]


def _best_effort_ids(value: bytes) -> dict[str, str]:
    """tenant/user/id from a document that failed validation, for the rejected event."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(doc, dict):
        return {}
    ids = {}
    if isinstance(doc.get("tenant_id"), str):
        ids["tenant_id"] = doc["tenant_id"][:256]
    recipient = doc.get("recipient")
    if isinstance(recipient, dict) and isinstance(recipient.get("user_id"), str):
        ids["user_id"] = recipient["user_id"][:256]
    if isinstance(doc.get("id"), str):
        ids["notification_id"] = doc["id"][:256]
    return ids


def parse_request(
    value: bytes | None,
    *,
    source: str,
    timestamp_ms: int,
    max_bytes: int,
    max_campaign_bytes: int = 8 * 1024 * 1024,
    key: bytes | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
) -> dict[str, Any] | Campaign | Rejection:
    """Validate one record value: a notification dict, a ``Campaign`` or a ``Rejection``.

    A document with an ``"audience"`` is a campaign (its own, larger, size limit).
    """

    def reject(kind: str, reason: str, **ids: str) -> Rejection:
        return Rejection(kind, reason, source, timestamp_ms, value, key, headers, **ids)

    if not value:
        return reject(KIND_EMPTY, "empty record value")
    campaign = b'"audience"' in value
    limit = max_campaign_bytes if campaign else max_bytes
    if len(value) > limit:
        return reject(KIND_OVERSIZED, f"request is {len(value)} bytes; the limit is {limit}")
    try:
        if campaign:
            return to_campaign(CampaignRequest.model_validate_json(value), source, timestamp_ms)
        request = NotificationRequest.model_validate_json(value)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            return reject(KIND_NOT_JSON, f"not valid JSON: {error.errors()[0]['msg']}")
        return reject(KIND_INVALID, describe_validation_error(error), **_best_effort_ids(value))
    return to_notification(request, source=source, timestamp_ms=timestamp_ms)


def _ms(moment: Any) -> float | None:
    return moment.timestamp() * 1000 if moment is not None else None


def to_campaign(request: CampaignRequest, source: str, timestamp_ms: int) -> Campaign:
    """The ``operators.campaign`` body for a validated campaign request."""
    body = request.model_dump(mode="json", exclude_none=True)
    audience = request.audience
    body["audience"] = (
        {"segment": audience.segment}
        if audience.segment is not None
        else {
            "user_ids": [
                u if isinstance(u, str) else u.model_dump(mode="json", exclude_none=True)
                for u in audience.user_ids or ()
            ]
        }
    )
    body["send_at_ms"] = _ms(request.send_at)
    body["expires_at_ms"] = _ms(request.expires_at)
    body["requested_at_ms"] = _ms(request.created_at) or float(timestamp_ms)
    for name in ("send_at", "expires_at", "created_at", "schema_version"):
        body.pop(name, None)
    return Campaign(body, source)


def to_notification(
    request: NotificationRequest, *, source: str, timestamp_ms: int
) -> dict[str, Any]:
    """The internal dict for a validated request (ids derived from ``source`` if absent)."""
    recipient = request.recipient
    requested_at_ms = (
        request.created_at.timestamp() * 1000 if request.created_at else float(timestamp_ms)
    )
    expires_at_ms = _ms(request.expires_at)
    if request.ttl_s is not None:
        ttl_expiry = requested_at_ms + request.ttl_s * 1000
        expires_at_ms = ttl_expiry if expires_at_ms is None else min(expires_at_ms, ttl_expiry)
    return {
        "id": request.id or stable_id("generated", source),
        "id_generated": request.id is None,
        "tenant_id": request.tenant_id,
        "user_id": recipient.user_id,
        "key": user_key(request.tenant_id, recipient.user_id),
        "category": request.category,
        "priority": request.priority.value,
        "channels": [c.value for c in request.channels] if request.channels else None,
        "content": (
            {ch.value: c.model_dump(exclude_none=True) for ch, c in request.content.items()}
            if request.content
            else None
        ),
        "template": request.template,
        "data": request.data,
        "recipient": recipient.model_dump(mode="json", exclude_none=True),
        "dedup_key": request.dedup_key,
        "send_at_ms": _ms(request.send_at),
        "expires_at_ms": expires_at_ms,
        "digest": request.digest.model_dump() if request.digest else None,
        "strategy": request.strategy.value if request.strategy else None,
        "metadata": request.metadata,
        "requested_at_ms": requested_at_ms,
        "source": source,
    }
