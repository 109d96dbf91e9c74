"""``DeliveryEvent``: every outcome, written to ``notifications.events``."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.request import Channel, Priority


class DeliveryStatus(StrEnum):
    """What happened. Stored as ``LowCardinality(String)`` so new values need no migration."""

    # orchestration
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # malformed request; the original bytes are on the DLQ topic
    DEDUPLICATED = "deduplicated"
    RATE_LIMITED = "rate_limited"
    DEFERRED = "deferred"
    SCHEDULED = "scheduled"
    HELD_QUIET_HOURS = "held_quiet_hours"
    EXPIRED = "expired"
    DIGESTED = "digested"
    SUPPRESSED = "suppressed"
    # delivery
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    FAILED_OVER = "failed_over"
    DEAD_LETTERED = "dead_lettered"
    TOKEN_INVALIDATED = "token_invalidated"
    # providers
    CIRCUIT_OPENED = "circuit_opened"
    CIRCUIT_HALF_OPEN = "circuit_half_open"
    CIRCUIT_CLOSED = "circuit_closed"
    # provider receipts
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    OPENED = "opened"
    CLICKED = "clicked"


class DeliveryEvent(BaseModel):
    """One outcome for one notification (and channel, once routed).

    ``event_id`` is derived deterministically from what the event describes, so the same
    outcome replayed after a crash has the same id and analytics count it once.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    event_id: str = Field(min_length=1)
    notification_id: str = Field(min_length=1)
    tenant_id: str
    user_id: str
    status: DeliveryStatus
    channel: Channel | None = None
    provider: str | None = None
    category: str | None = None
    priority: Priority | None = None
    reason: str | None = None
    attempt: int = Field(0, ge=0)
    latency_ms: float | None = Field(None, ge=0)
    cost_usd: float | None = Field(None, ge=0)
    campaign_id: str | None = None
    variant: str | None = Field(None, description="A/B assignment, '<experiment>:<variant>'")
    strategy: str | None = Field(None, description="Delivery strategy that chose the channel")
    provider_message_id: str | None = None
    segments: int | None = Field(None, ge=0, description="SMS segments (GSM-7/UCS-2)")
    requested_at: AwareDatetime
    occurred_at: AwareDatetime
