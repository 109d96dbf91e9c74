"""``UserProfile`` (stored per user in Redis) and ``ProfileUpdate`` (the profile-update topic).

A profile holds a user's addresses, locale, timezone, quiet hours, opt-outs and consent
records. Request values win over profile values; opt-outs and consents decide which channels
may be used (``operators.preferences``).

``ProfileUpdate.op``:

* ``upsert`` — ``profile`` replaces the stored profile (absent fields are cleared).
* ``merge`` — each top-level field given in ``profile`` replaces the stored one (``null``
  clears it), except ``consents``, which are *appended* (an identical record is not added
  twice, so a replayed merge is harmless): consent history is an audit trail.
* ``erase`` — everything stored for the user (profile and push tokens) is deleted (GDPR).

``at`` is when the change happened at its source; an update older than the stored
``updated_at`` is ignored (erase always applies).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.request import (
    SCHEMA_VERSION,
    Channel,
    EmailAddress,
    HttpUrl,
    Identifier,
    PhoneNumber,
    TimeWindow,
)

__all__ = [
    "ConsentRecord",
    "OptOuts",
    "ProfilePushToken",
    "ProfileUpdate",
    "UserProfile",
    "WebPushKeys",
    "WebPushSubscription",
]

Category = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Base64Url = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+=*$", max_length=256)]


class ProfilePushToken(BaseModel):
    """A native push token (FCM registration token or APNs device token)."""

    model_config = ConfigDict(extra="forbid")

    platform: Literal["fcm", "apns"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    device_id: Identifier | None = None


class WebPushKeys(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p256dh: Base64Url
    auth: Base64Url


class WebPushSubscription(BaseModel):
    """A browser's ``PushSubscription.toJSON()`` (endpoint + keys)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: HttpUrl
    keys: WebPushKeys
    device_id: Identifier | None = None


class OptOuts(BaseModel):
    """Channels, categories, and channels within a category the user does not want."""

    model_config = ConfigDict(extra="forbid")

    channels: list[Channel] = Field(default_factory=list, max_length=6)
    categories: list[Category] = Field(default_factory=list, max_length=1000)
    category_channels: dict[Category, list[Channel]] = Field(default_factory=dict)


class ConsentRecord(BaseModel):
    """Consent granted or withdrawn for a channel; the latest ``at`` per channel counts."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel
    granted: bool
    at: AwareDatetime
    source: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class UserProfile(BaseModel):
    """Everything notiflow knows about one user of one tenant."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: Identifier
    user_id: Identifier
    email: EmailAddress | None = None
    phone: PhoneNumber | None = None
    push_tokens: list[ProfilePushToken] = Field(default_factory=list, max_length=32)
    webpush_subscriptions: list[WebPushSubscription] = Field(default_factory=list, max_length=32)
    webhook_url: HttpUrl | None = None
    locale: str | None = Field(None, max_length=35)
    timezone: str | None = Field(None, max_length=64, description="IANA name, e.g. Europe/Berlin")
    quiet_hours: TimeWindow | None = Field(None, description="Local quiet hours, '22:00-08:00'")
    opt_outs: OptOuts = Field(default_factory=OptOuts)
    consents: list[ConsentRecord] = Field(default_factory=list, max_length=1000)
    updated_at: AwareDatetime | None = None


#: Fields a ``profile`` in an update may carry (identity comes from the update itself).
PROFILE_FIELDS = frozenset(UserProfile.model_fields) - {"tenant_id", "user_id"}


class ProfileUpdate(BaseModel):
    """One change to one profile, as produced to the profile-update topic."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    tenant_id: Identifier
    user_id: Identifier
    op: Literal["upsert", "merge", "erase"]
    profile: dict[str, Any] | None = Field(
        None, description="upsert: the whole profile; merge: the top-level fields to change"
    )
    at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _profile_matches_op(self) -> ProfileUpdate:
        if self.op == "erase":
            if self.profile:
                raise ValueError("'erase' takes no 'profile'")
            return self
        if self.profile is None:
            raise ValueError(f"'{self.op}' needs a 'profile'")
        for name in ("tenant_id", "user_id"):
            given = self.profile.get(name, getattr(self, name))
            if given != getattr(self, name):
                raise ValueError(f"profile.{name} {given!r} differs from the update's")
        unknown = set(self.profile) - PROFILE_FIELDS - {"tenant_id", "user_id"}
        if unknown:
            raise ValueError(f"unknown profile field(s): {', '.join(sorted(unknown))}")
        # Validates every given field (merge fields are checked as a partial profile).
        self.validated_profile()
        return self

    def validated_profile(self) -> UserProfile:
        """``profile`` as a ``UserProfile`` (fields not given take their defaults)."""
        fields = {k: v for k, v in (self.profile or {}).items() if v is not None}
        return UserProfile.model_validate(
            {**fields, "tenant_id": self.tenant_id, "user_id": self.user_id}
        )
