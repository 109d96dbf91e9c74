"""``NotificationRequest``: what producers write to the ingest topic (one JSON object)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION = 1

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256)]
EmailAddress = Annotated[
    str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)
]
PhoneNumber = Annotated[str, StringConstraints(pattern=r"^\+[1-9]\d{6,14}$")]  # E.164
HttpUrl = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2048)]
#: A daily local-time window, ``"22:00-08:00"`` (wraps midnight when start > end).
TimeWindow = Annotated[
    str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")
]


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    IN_APP = "in_app"
    WEBHOOK = "webhook"
    VOICE = "voice"


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Strategy(StrEnum):
    """How channels are chosen (docs/strategies.md); unset: the category/tenant default."""

    IMMEDIATE = "immediate"
    SEQUENTIAL = "sequential"
    PRIORITY = "priority"
    COST = "cost"
    SMART = "smart"


class PushToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Literal["fcm", "apns", "webpush"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class Recipient(BaseModel):
    """Who receives it: a user id plus any direct addresses the producer already knows."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    email: EmailAddress | None = None
    phone: PhoneNumber | None = None
    push_tokens: list[PushToken] = Field(default_factory=list, max_length=32)
    webhook_url: HttpUrl | None = None
    locale: str | None = Field(None, max_length=35)
    timezone: str | None = Field(None, max_length=64, description="IANA name, e.g. Europe/Berlin")
    quiet_hours: TimeWindow | None = Field(None, description="Local quiet hours, '22:00-08:00'")


class DigestSpec(BaseModel):
    """Collect notifications with the same ``key`` for ``window_s`` and send them as one."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    window_s: float = Field(3600, gt=0, le=7 * 86400)
    max_items: int = Field(50, ge=1, le=1000)


class ChannelContent(BaseModel):
    """Rendered (or ``$placeholder``) content for one channel."""

    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(None, max_length=998)
    body: str = Field("", max_length=32_768)
    html: str | None = Field(None, max_length=65_536)
    data: dict[str, Any] = Field(default_factory=dict)


class NotificationRequest(BaseModel):
    """One notification for one user, as produced to ``notifications.requests``.

    Either ``content`` (per channel) or ``template`` (+ ``data``) is required. ``id`` is
    the idempotency key: a repeat of an accepted id is reported ``deduplicated`` and not
    sent again. Without ``id`` one is derived from the record's topic/partition/offset (so
    a replay keeps it) and reported on the ``accepted`` event.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    id: Identifier | None = None
    tenant_id: Identifier
    recipient: Recipient
    category: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "default"
    priority: Priority = Priority.NORMAL
    channels: list[Channel] | None = Field(None, min_length=1, max_length=6)
    content: dict[Channel, ChannelContent] | None = None
    template: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,128}$")] | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    dedup_key: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    send_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    ttl_s: float | None = Field(None, gt=0, description="Expire this long after created_at")
    digest: DigestSpec | None = None
    strategy: Strategy | None = None
    created_at: AwareDatetime | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)

    @model_validator(mode="after")
    def _content_or_template(self) -> NotificationRequest:
        if not self.content and not self.template:
            raise ValueError("either 'content' or 'template' is required")
        if self.send_at and self.expires_at and self.expires_at <= self.send_at:
            raise ValueError("'expires_at' must be after 'send_at'")
        return self


def utc_iso(moment: datetime) -> str:
    """ISO-8601 with a ``Z`` suffix, millisecond precision (the wire format for times)."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Audience(BaseModel):
    """Who a campaign goes to: an explicit list (ids or recipients) or a stored segment."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[Identifier | Recipient] | None = Field(None, max_length=100_000)
    segment: Identifier | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Audience:
        if (self.user_ids is None) == (self.segment is None):
            raise ValueError("audience needs exactly one of 'user_ids' or 'segment'")
        return self


class CampaignRequest(BaseModel):
    """One notification for many users, split into per-user notifications by the engine."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    campaign_id: Identifier
    tenant_id: Identifier
    audience: Audience
    category: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "default"
    priority: Priority = Priority.NORMAL
    channels: list[Channel] | None = Field(None, min_length=1, max_length=6)
    content: dict[Channel, ChannelContent] | None = None
    template: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,128}$")] | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    send_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    strategy: Strategy | None = None
    created_at: AwareDatetime | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)

    @model_validator(mode="after")
    def _content_or_template(self) -> CampaignRequest:
        if not self.content and not self.template:
            raise ValueError("either 'content' or 'template' is required")
        return self
