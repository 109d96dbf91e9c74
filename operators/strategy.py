"""Delivery strategies: which of a released notification's channels to send on, and when.

The user pipeline decides *whether* a notification may go (dedup, schedule, quiet hours,
caps) and on which channels; the strategy decides how to use them. Per notification the
strategy is ``note["strategy"]`` (per request or set by an experiment), else the (tenant,
category) default, else the tenant default, else the global default (``resolve_strategy``):

- ``immediate`` — every channel now (a pass-through);
- ``sequential`` — one channel at a time; the next on a failure of every delivery of the
  current one, or when no delivered/opened/clicked receipt arrives by its timeout; stops on
  the first receipt. Order: the request's explicit order, else ``order``, else cheapest first;
- ``priority`` — critical: every channel (the pipeline already bypassed caps and quiet
  hours); low: the cheapest channel, or (``low_action="digest"``) a ``ToDigest``; others: all;
- ``cost`` — the cheapest channel, cost ties broken by speed (push first), skipping channels
  the user is known to ignore (``min_rate``);
- ``smart`` — one channel by Thompson sampling over the user's open rates (uniformly random a
  fraction ``explore_fraction`` of the time), sent at the user's best local hour within
  ``max_delay_s`` once ``min_observations`` opens are known (never delays critical or
  ``send_at`` notifications, never into quiet hours or the SMS/voice night).

Outputs (``Output``): ``Release`` (send now on these channels), ``ToDigest`` (hand the note,
``digest`` set, to the user pipeline's digest collector — not to ``on_item``, whose
idempotency check would drop it) or an event dict. Released notes name their strategy in
``note["strategy"]`` and ``note["metadata"]["strategy"]`` (so every later event records it).

State (``StrategyState``) is per user: the engagement model (kept from a user's first
``smart`` notification, or for every user with ``engagement.track``; dropped after
``engagement.ttl_s`` without activity), sequential notifications in flight and delayed smart
sends. It is discarded when all three are gone. Time is epoch seconds, passed in.
Randomness comes from ``random.Random(rng_seed_fn(note))``: a replay makes the same choice.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, NamedTuple

from operators.digest import CATEGORY as DIGEST_CATEGORY
from operators.engagement import Engagement
from operators.events import note_event
from operators.quiet_hours import DailyWindow, channel_open_at, quiet_until, zone
from operators.routing import addresses_for
from operators.strategy_config import SMART, STRATEGIES, StrategyConfig
from operators.user_pipeline import Release

__all__ = [
    "STRATEGIES",
    "Delayed",
    "Output",
    "Pending",
    "StrategyConfig",
    "StrategyEngine",
    "StrategyState",
    "ToDigest",
    "resolve_strategy",
    "seed_for",
]

FAILURE_STATUSES = frozenset({"failed", "dead_lettered", "token_invalidated", "bounced"})
RECEIPT_STATUSES = frozenset({"delivered", "opened", "clicked"})
ENGAGED_STATUSES = frozenset({"opened", "clicked"})
_RELEVANT = FAILURE_STATUSES | RECEIPT_STATUSES | {"sent"}
SEEN_KEYS = 24  # engagement keys remembered to ignore duplicate events (4 bytes each)


class ToDigest(NamedTuple):
    """A low-priority note (``note["digest"]`` set) for the user pipeline's digest collector."""

    note: dict[str, Any]


Output = Release | ToDigest | dict[str, Any]


@dataclass(slots=True)
class Pending:
    """A sequential notification in flight on ``current`` until ``deadline`` (epoch s)."""

    note: dict[str, Any]
    current: str
    remaining: tuple[str, ...]
    deadline: float
    tried: tuple[str, ...]
    failures: frozenset[str] = frozenset()  # failed deliveries (event keys) on ``current``


@dataclass(slots=True)
class Delayed:
    """A smart send held until ``due`` (epoch s)."""

    due: float
    note: dict[str, Any]
    channels: tuple[str, ...]


@dataclass(slots=True)
class StrategyState:
    engagement: Engagement | None = None
    timezone: str | None = None  # the recipient's, for the local hour of opens
    touched: int = 0  # last engagement activity (epoch s)
    seen: bytes = b""  # recent engagement event keys, 4 bytes each
    pending: dict[str, Pending] = field(default_factory=dict)
    delayed: list[Delayed] = field(default_factory=list)

    def is_empty(self) -> bool:
        return self.engagement is None and not self.pending and not self.delayed


def resolve_strategy(note: Mapping[str, Any], config: StrategyConfig) -> str:
    """Per request (or experiment) → (tenant, category) default → tenant default → default."""
    requested = note.get("strategy")
    if requested in STRATEGIES:
        return requested
    tenant = note["tenant_id"]
    if config.categories:
        by_category = config.categories.get((tenant, note["category"]))
        if by_category:
            return by_category
    return config.tenants.get(tenant, config.default)


def seed_for(note: Mapping[str, Any]) -> int:
    """A stable 64-bit seed from the notification's tenant, user and id."""
    key = f"{note['tenant_id']}\x1f{note['user_id']}\x1f{note['id']}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def _tag(note: dict[str, Any], name: str) -> dict[str, Any]:
    """``note`` naming its strategy: ``note["strategy"]`` and ``metadata["strategy"]`` (which
    ``note_event`` and the dispatcher put on every event)."""
    metadata = note["metadata"]
    if note.get("strategy") == name and metadata.get("strategy") == name:
        return note
    return {**note, "strategy": name, "metadata": {**metadata, "strategy": name}}


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


class StrategyEngine:
    """Pure per-user strategy logic over a ``StrategyState``: ``on_release``, ``on_event``,
    ``on_due`` and ``next_due``. Never blocks, never reads the clock."""

    def __init__(
        self,
        config: StrategyConfig,
        rng_seed_fn: Callable[[Mapping[str, Any]], int] = seed_for,
        *,
        default_quiet_hours: str | None = None,
    ) -> None:
        self.config = config
        self.seed = rng_seed_fn
        self.default_quiet = DailyWindow.parse(default_quiet_hours) if default_quiet_hours else None
        self._handlers = {
            "sequential": self._sequential,
            "priority": self._priority,
            "cost": self._cost,
            "smart": self._smart,
        }

    # --- entry points ------------------------------------------------------------------------
    def on_release(
        self, state: StrategyState, note: dict[str, Any], channels: tuple[str, ...], now: float
    ) -> list[Output]:
        """A ``Release`` from the user pipeline: what to send now, what to hold."""
        name = resolve_strategy(note, self.config)
        if self.config.track_engagement:
            self._remember_timezone(state, note)
        handler = self._handlers.get(name)
        if handler is None or not channels:
            return [Release(_tag(note, name), channels)]
        return handler(state, _tag(note, name), tuple(dict.fromkeys(channels)), now)

    def on_event(self, state: StrategyState, event: Mapping[str, Any], now: float) -> list[Output]:
        """A delivery event or receipt about this user: learn from it, advance ``sequential``.

        Idempotent: a replayed event neither advances a notification twice nor (within the
        last ``SEEN_KEYS`` keys) counts twice. Events for unknown notifications only teach."""
        status = event.get("status")
        channel = event.get("channel")
        if status not in _RELEVANT or not channel:
            return []
        if state.engagement is not None or self.config.track_engagement:
            self._learn(state, event, status, channel, now)
        pending = state.pending.get(event.get("notification_id", ""))
        if pending is None:
            return []
        if status in RECEIPT_STATUSES or (
            status == "sent"
            and channel == pending.current
            and channel in self.config.success_on_sent
        ):
            del state.pending[pending.note["id"]]
            return []
        if status not in FAILURE_STATUSES or channel != pending.current:
            return []  # sent: wait for a receipt until the deadline
        key = str(event.get("event_id") or (status, event.get("occurred_at")))
        pending.failures = pending.failures | {key}
        if len(pending.failures) < max(1, len(addresses_for(channel, pending.note["recipient"]))):
            return []  # another address of this channel may still get through
        why = f"{status} on {channel}" + (f": {event['reason']}" if event.get("reason") else "")
        return self._advance(state, pending, now, why)

    def on_due(self, state: StrategyState, now: float) -> list[Output]:
        """Sequential timeouts fail over; delayed smart sends go out; stale engagement goes."""
        out: list[Output] = []
        for pending in sorted(state.pending.values(), key=lambda p: p.deadline):
            if pending.deadline <= now:
                timeout = self.config.timeout_for(pending.current)
                why = f"no delivered/opened receipt on {pending.current} within {timeout:g} s"
                out += self._advance(state, pending, now, why)
        due = [d for d in state.delayed if d.due <= now]
        if due:
            state.delayed = [d for d in state.delayed if d.due > now]
            for delayed in sorted(due, key=lambda d: d.due):
                expires = delayed.note.get("expires_at_ms")
                if expires is not None and expires <= now * 1000:
                    reason = "stale: past expires_at"
                    out.append(note_event(delayed.note, "expired", now * 1000, reason=reason))
                else:
                    out.append(Release(delayed.note, delayed.channels))
        if state.engagement is not None and state.touched + self.config.engagement_ttl_s <= now:
            state.engagement, state.timezone, state.seen = None, None, b""
        return out

    def next_due(self, state: StrategyState) -> float | None:
        """When ``on_due`` next has work (epoch s), from the state alone."""
        if state.is_empty():
            return None
        candidates = [p.deadline for p in state.pending.values()]
        candidates += [d.due for d in state.delayed]
        if state.engagement is not None:
            candidates.append(state.touched + self.config.engagement_ttl_s)
        return min(candidates) if candidates else None

    # --- strategies --------------------------------------------------------------------------
    def _sequential(
        self, state: StrategyState, note: dict, channels: tuple[str, ...], now: float
    ) -> list[Output]:
        pending = state.pending.get(note["id"])
        if pending is not None:  # more channels released later (held or deferred ones)
            known = {*pending.tried, *pending.remaining}
            pending.remaining += tuple(c for c in self._order(note, channels) if c not in known)
            return []
        if len(channels) == 1 or len(state.pending) >= self.config.max_pending:
            return [Release(note, channels)]  # nothing to fall back to / too many in flight
        first, *rest = self._order(note, channels)
        deadline = now + self.config.timeout_for(first)
        state.pending[note["id"]] = Pending(note, first, tuple(rest), deadline, (first,))
        return [Release(note, (first,))]

    def _priority(
        self, state: StrategyState, note: dict, channels: tuple[str, ...], now: float
    ) -> list[Output]:
        if note["priority"] != "low":
            return [Release(note, channels)]
        if (
            self.config.low_action == "digest"
            and not note.get("digest")
            and note["category"] != DIGEST_CATEGORY
        ):
            return [ToDigest({**note, "digest": dict(self.config.low_digest)})]
        return [Release(note, (self._cheapest(state, channels),))]

    def _cost(
        self, state: StrategyState, note: dict, channels: tuple[str, ...], now: float
    ) -> list[Output]:
        return [Release(note, (self._cheapest(state, channels),))]

    def _smart(
        self, state: StrategyState, note: dict, channels: tuple[str, ...], now: float
    ) -> list[Output]:
        if state.engagement is None:
            state.engagement = Engagement()
        self._remember_timezone(state, note)
        state.touched = int(now)
        rng = random.Random(self.seed(note))
        if len(channels) == 1:
            channel = channels[0]
        elif rng.random() < self.config.explore_fraction:
            channel = rng.choice(channels)
        else:
            channel = state.engagement.sample_best_channel(rng, channels)
        due, hour = self._send_time(state, note, channel, now)
        if due is None or len(state.delayed) >= self.config.max_delayed:
            return [Release(note, (channel,))]
        state.delayed.append(Delayed(due, note, (channel,)))
        reason = f"smart send time: best hour {hour:02d}:00 local"
        return [
            note_event(
                note, "scheduled", now * 1000, channel=channel, reason=reason, discriminator=SMART
            )
        ]

    # --- helpers -----------------------------------------------------------------------------
    def _order(self, note: dict, channels: tuple[str, ...]) -> list[str]:
        if note.get("channels") and not note.get("channels_derived"):
            # the request's own order (routing keeps it); derived: the enrich step made the
            # channels left after preference filtering explicit
            return list(channels)
        if self.config.order:
            rank = {c: i for i, c in enumerate(self.config.order)}
            return sorted(channels, key=lambda c: rank.get(c, len(rank)))
        return sorted(channels, key=self.config.cost_rank)

    def _cheapest(self, state: StrategyState, channels: tuple[str, ...]) -> str:
        model, config = state.engagement, self.config
        ignored = (
            {
                c
                for c in channels
                if model.observations(c) >= max(config.min_observations, 1)
                and model.observed_rate(c) < config.min_rate
            }
            if model is not None
            else set()
        )
        return min([c for c in channels if c not in ignored] or channels, key=config.cost_rank)

    def _advance(self, state: StrategyState, pending: Pending, now: float, why: str) -> list:
        """Move ``pending`` to its next usable channel, or give up with a ``failed`` event."""
        note, failed = pending.note, pending.current
        critical = note["priority"] == "critical"
        tz = note["recipient"].get("timezone")
        remaining, skipped = list(pending.remaining), []
        while remaining:
            channel = remaining.pop(0)
            if not critical and channel_open_at(channel, _utc(now), tz) is not None:
                skipped.append(channel)  # SMS/voice outside 08:00–21:00 local
                continue
            pending.current, pending.remaining = channel, tuple(remaining)
            pending.tried += (channel,)
            pending.deadline = now + self.config.timeout_for(channel)
            pending.failures = frozenset()
            note_skips = f"; skipped {', '.join(skipped)} (outside local hours)" if skipped else ""
            reason = f"sequential: {why}; trying {channel}{note_skips}"
            return [
                note_event(
                    note,
                    "failed_over",
                    now * 1000,
                    channel=failed,
                    reason=reason,
                    discriminator="sequential",
                ),
                Release(note, (channel,)),
            ]
        del state.pending[note["id"]]
        tail = f"; skipped {', '.join(skipped)} (outside local hours)" if skipped else ""
        reason = f"sequential: {why}; no channel left (tried {', '.join(pending.tried)}){tail}"
        return [note_event(note, "failed", now * 1000, reason=reason, discriminator="sequential")]

    def _send_time(
        self, state: StrategyState, note: dict, channel: str, now: float
    ) -> tuple[float | None, int]:
        """The start of the user's best local hour within ``max_delay_s`` (``None``: now)."""
        model, config = state.engagement, self.config
        if (
            model is None
            or model.opens < config.min_observations
            or note["priority"] == "critical"
            or note.get("send_at_ms") is not None
            or config.max_delay_s <= 0
        ):
            return None, 0
        tz = note["recipient"].get("timezone")
        local_zone = zone(tz)
        limit = now + config.max_delay_s
        if note.get("expires_at_ms") is not None:
            limit = min(limit, note["expires_at_ms"] / 1000 - 60)
        local_now = datetime.fromtimestamp(now, local_zone)
        hour_start = local_now.replace(minute=0, second=0, microsecond=0).timestamp()
        reach = min(int((limit - hour_start) // 3600) + 1, 24)  # +1: a DST shift
        counts = model.hours
        if all(counts[(local_now.hour + k) % 24] <= counts[local_now.hour] for k in range(reach)):
            return None, 0  # no reachable hour beats this one: skip the exact walk
        own = note["recipient"].get("quiet_hours")
        quiet = DailyWindow.parse(own) if own else self.default_quiet
        instants = [now]
        for k in range(1, 25):
            at = hour_start + k * 3600
            if at > limit:
                break
            moment = _utc(at)
            if quiet is not None and quiet_until(quiet, moment, tz) is not None:
                continue
            if channel_open_at(channel, moment, tz) is None:
                instants.append(at)
        hours = [_local_hour(at, local_zone) for at in instants]
        best = model.best_hour(hours, min_observations=config.min_observations)
        if best is None or best == hours[0]:
            return None, 0
        return instants[hours.index(best)], best

    def _learn(
        self, state: StrategyState, event: Mapping[str, Any], status: str, channel: str, now: float
    ) -> None:
        engaged = status in ENGAGED_STATUSES or (
            status == "delivered" and channel in self.config.delivered_as_open
        )
        kind = "t" if status == "sent" else "s" if engaged else ""
        if not kind:
            return
        key = hashlib.blake2b(
            f"{event.get('notification_id')}\x1f{channel}\x1f{kind}".encode(), digest_size=4
        ).digest()
        if _has_key(state.seen, key):
            return  # a duplicate (replay, several addresses, repeated opens)
        state.seen = (state.seen + key)[-4 * SEEN_KEYS :]
        model = state.engagement or Engagement()
        if kind == "t":
            state.engagement = model.sent(channel)
        else:
            at = _event_time(event, now)
            state.engagement = model.opened(channel, _local_hour(at, zone(state.timezone)))
        state.touched = int(now)

    @staticmethod
    def _remember_timezone(state: StrategyState, note: dict) -> None:
        tz = note["recipient"].get("timezone")
        if tz and tz != state.timezone:
            state.timezone = tz


def _has_key(seen: bytes, key: bytes) -> bool:
    """Whether the 4-byte ``key`` is one of the aligned entries of ``seen``."""
    at = seen.find(key)
    while at != -1 and at % 4:
        at = seen.find(key, at + 1)
    return at != -1


def _local_hour(epoch_s: float, local_zone: tzinfo) -> int:
    return datetime.fromtimestamp(epoch_s, local_zone).hour


def _event_time(event: Mapping[str, Any], now: float) -> float:
    """The event's ``occurred_at`` (ISO-8601) as epoch seconds, else ``now``."""
    occurred = event.get("occurred_at")
    if isinstance(occurred, str):
        try:
            moment = datetime.fromisoformat(occurred)
        except ValueError:
            return now
        if moment.tzinfo is not None:
            return moment.timestamp()
    return now
