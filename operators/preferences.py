"""Apply a user's stored profile to a notification: fill addresses, drop unwanted channels.

``merge_profile`` fills the recipient from the profile wherever the request gave no value
(request values win). ``filter_channels`` splits channels into eligible and suppressed, each
suppression with a readable reason. Rules, in order, for a channel ``c`` and category ``k``:

1. ``k`` is mandatory for the tenant (``PreferencePolicy``): every channel is eligible. A
   mandatory category is transactional (password reset, security alert): it ignores opt-outs
   *and* consent, withdrawn consent included.
2. The user opted out of ``c``, of ``k``, or of ``k`` on ``c``.
3. The user's latest consent record for ``c`` withdrew consent (always honoured).
4. The tenant requires consent for ``c`` and the user has no record granting it.

Priority never bypasses these rules: a critical notification in a non-mandatory category
honours opt-outs. Stateless and pure (profiles are plain dicts, as ``UserProfile`` dumps to
JSON); no Redis or Bytewax here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.request import Channel, utc_iso

__all__ = [
    "PreferencePolicy",
    "TenantPolicy",
    "filter_channels",
    "merge_profile",
    "profile_push_tokens",
    "webpush_token",
]

#: Recipient fields a profile may fill (the request's own value wins).
_SCALAR_FIELDS = ("email", "phone", "webhook_url", "locale", "timezone", "quiet_hours")
_CHANNELS = frozenset(c.value for c in Channel)
DEFAULT_TENANT = "*"


def webpush_token(subscription: Mapping[str, Any]) -> str:
    """The compact subscription JSON used after ``webpush:`` in push addresses."""
    keys = subscription["keys"]
    return orjson.dumps(
        {
            "endpoint": subscription["endpoint"],
            "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]},
        }
    ).decode()


def profile_push_tokens(profile: Mapping[str, Any]) -> list[dict[str, str]]:
    """The profile's native tokens and web push subscriptions as recipient push tokens."""
    tokens = [
        {"platform": t["platform"], "token": t["token"]} for t in profile.get("push_tokens", ())
    ]
    tokens += [
        {"platform": "webpush", "token": webpush_token(s)}
        for s in profile.get("webpush_subscriptions", ())
    ]
    return tokens


def merge_profile(note: dict[str, Any], profile: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new note whose ``recipient`` is completed from ``profile`` (``note`` is unchanged).

    Scalar fields are taken from the profile when the request has none; push tokens come from
    the profile only when the request named none (the request's list is taken as complete).
    """
    if not profile:
        return dict(note)
    recipient = dict(note["recipient"])
    for name in _SCALAR_FIELDS:
        if recipient.get(name) is None and profile.get(name) is not None:
            recipient[name] = profile[name]
    if not recipient.get("push_tokens"):
        tokens = profile_push_tokens(profile)
        if tokens:
            recipient["push_tokens"] = tokens
    return {**note, "recipient": recipient}


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """Categories users cannot opt out of, and channels that need explicit consent."""

    mandatory_categories: frozenset[str] = frozenset()
    consent_required: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PreferencePolicy:
    """Per-tenant ``TenantPolicy``; tenants without an entry use ``default`` (``"*"``).

    Built from config such as ``{"*": {"consent_required": ["sms"]}, "acme":
    {"mandatory_categories": ["security"]}}``: a tenant entry's fields replace the ``"*"``
    entry's, fields it leaves out are inherited.
    """

    tenants: Mapping[str, TenantPolicy] = field(default_factory=dict)
    default: TenantPolicy = TenantPolicy()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str | bytes) -> PreferencePolicy:
        """Parse the config (a mapping or its JSON); ValueError when it is malformed."""
        raw = orjson.loads(config) if isinstance(config, str | bytes) else config
        if not isinstance(raw, Mapping):
            raise ValueError("preference policy must be a JSON object keyed by tenant")
        default = _tenant_policy(DEFAULT_TENANT, raw.get(DEFAULT_TENANT, {}), TenantPolicy())
        tenants = {
            tenant: _tenant_policy(tenant, entry, default)
            for tenant, entry in raw.items()
            if tenant != DEFAULT_TENANT
        }
        return cls(tenants, default)

    def for_tenant(self, tenant_id: str) -> TenantPolicy:
        return self.tenants.get(tenant_id, self.default)


def _tenant_policy(tenant: str, entry: Any, base: TenantPolicy) -> TenantPolicy:
    if not isinstance(entry, Mapping):
        raise ValueError(f"preference policy for {tenant!r} must be an object")
    unknown = set(entry) - {"mandatory_categories", "consent_required"}
    if unknown:
        raise ValueError(f"preference policy for {tenant!r}: unknown key(s) {sorted(unknown)}")
    mandatory = entry.get("mandatory_categories", base.mandatory_categories)
    consent = entry.get("consent_required", base.consent_required)
    for name, values in (("mandatory_categories", mandatory), ("consent_required", consent)):
        if isinstance(values, str) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"preference policy for {tenant!r}: {name} must be a list of strings")
    bad = set(consent) - _CHANNELS
    if bad:
        raise ValueError(f"preference policy for {tenant!r}: unknown channel(s) {sorted(bad)}")
    return TenantPolicy(frozenset(mandatory), frozenset(consent))


def _as_utc(value: Any) -> datetime | None:
    """A consent time (ISO string or datetime) as aware UTC; None when unreadable."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:
        return None
    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _latest_consents(profile: Mapping[str, Any]) -> dict[str, tuple[datetime, dict[str, Any]]]:
    """Channel → (time, record) of its latest consent record (a later entry wins a tie)."""
    latest: dict[str, tuple[datetime, dict[str, Any]]] = {}
    for record in profile.get("consents", ()):
        at = _as_utc(record.get("at"))
        if at is None:
            continue
        channel = record.get("channel")
        current = latest.get(channel)
        if current is None or at >= current[0]:
            latest[channel] = (at, record)
    return latest


def filter_channels(
    note: Mapping[str, Any],
    channels: Sequence[str],
    profile: Mapping[str, Any] | None,
    policy: PreferencePolicy,
) -> tuple[list[str], list[tuple[str, str]]]:
    """``(eligible, [(channel, reason), ...])``: every channel of ``channels`` lands in
    exactly one of the two, in input order."""
    category = note.get("category") or "default"
    tenant_policy = policy.for_tenant(note["tenant_id"])
    if category in tenant_policy.mandatory_categories:
        return list(channels), []
    profile = profile or {}
    opt_outs = profile.get("opt_outs") or {}
    opted_channels = set(opt_outs.get("channels", ()))
    opted_category = category in set(opt_outs.get("categories", ()))
    opted_in_category = set((opt_outs.get("category_channels") or {}).get(category, ()))
    consents = _latest_consents(profile)

    eligible: list[str] = []
    suppressed: list[tuple[str, str]] = []
    for channel in channels:
        latest = consents.get(channel)
        if channel in opted_channels:
            reason = f"user opted out of {channel}"
        elif opted_category:
            reason = f"user opted out of category {category}"
        elif channel in opted_in_category:
            reason = f"user opted out of {category} on {channel}"
        elif latest is not None and not latest[1].get("granted"):
            source = latest[1].get("source", "unknown")
            reason = f"consent for {channel} withdrawn at {utc_iso(latest[0])} (source: {source})"
        elif latest is None and channel in tenant_policy.consent_required:
            reason = f"no consent for {channel}"
        else:
            eligible.append(channel)
            continue
        suppressed.append((channel, reason))
    return eligible, suppressed
