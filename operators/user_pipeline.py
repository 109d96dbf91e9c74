"""Every per-user decision in one state machine, under one timer.

A notification for a user passes, in order: idempotency (request id) → content dedup →
expiry → digest collection → schedule (``send_at``) → quiet hours → per channel: the SMS/voice
08:00–21:00 local rule and fatigue caps (defer or drop). What may go now comes out as a
``Release`` (the note and its channels); everything else is an event saying why, and held
notifications wait in the state with their due time, so a restart loses none of them (Bytewax
timers are not snapshotted: ``next_due`` is computed from the state).

State is discarded (``UserState.is_empty``) once every window has expired and nothing is held.
Time is passed in as epoch seconds; nothing here reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from operators.content_key import ContentWindow, SeenContent, content_key
from operators.dedup import IdempotencyWindow, SeenIds
from operators.digest import DigestBuffer, DigestCollector, merge_held
from operators.events import note_event
from operators.quiet_hours import DailyWindow, channel_open_at, quiet_until
from operators.rate_limit import PolicyBook, RateState, SlidingWindowLimiter
from operators.routing import addresses_for, choose_channels

STAGE_QUIET = "quiet"  # resume at the quiet-hours check (after a schedule)
STAGE_CHANNELS = "channels"  # resume at the per-channel checks


class Release(NamedTuple):
    """A notification cleared to go out now on ``channels``."""

    note: dict[str, Any]
    channels: tuple[str, ...]


Output = Release | dict[str, Any]  # a Release or a DeliveryEvent dict


@dataclass(slots=True)
class Held:
    """A notification waiting in state until ``due`` (epoch s)."""

    due: float
    reason: str  # scheduled | quiet_hours | channel_hours | deferred
    stage: str
    note: dict[str, Any]
    channels: tuple[str, ...] | None = None  # None: not yet routed


@dataclass(slots=True)
class UserState:
    ids: SeenIds | None = None
    content: SeenContent | None = None
    rate: RateState | None = None
    digests: DigestBuffer | None = None
    held: list[Held] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.ids or self.content or self.rate or self.digests or self.held)

    def __reduce__(self) -> tuple:  # pickled in every snapshot: 4× faster than the default
        return UserState, (self.ids, self.content, self.rate, self.digests, self.held)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    idempotency_window_s: float = 24 * 3600
    content_window_s: float = 600
    critical_skips_content_dedup: bool = True
    default_timezone: str = "UTC"
    default_quiet_hours: str | None = None
    max_held: int = 1000


class UserPipeline:
    """Pure per-user logic: ``on_item``, ``on_due`` and ``next_due`` over a ``UserState``."""

    def __init__(self, config: PipelineConfig, limits: PolicyBook) -> None:
        self.config = config
        self.ids = IdempotencyWindow(config.idempotency_window_s)
        self.content = ContentWindow(config.content_window_s)
        self.limiter = SlidingWindowLimiter(limits)
        self.digests = DigestCollector()
        self.default_quiet = (
            DailyWindow.parse(config.default_quiet_hours) if config.default_quiet_hours else None
        )

    # --- entry points ------------------------------------------------------------------------
    def on_item(self, state: UserState, note: dict[str, Any], now: float) -> list[Output]:
        """A new notification for this user."""
        state.ids, duplicate = self.ids.observe(state.ids, note["id"], now)
        if duplicate:
            reason = f"request id {note['id']!r} already accepted"
            return [
                note_event(
                    note, "deduplicated", now * 1000, reason=reason, discriminator=note["source"]
                )
            ]
        critical = note["priority"] == "critical"
        if not (critical and self.config.critical_skips_content_dedup):
            key = content_key(note)
            state.content, original = self.content.observe(state.content, key, note["id"], now)
            if original is not None:
                reason = f"same content as notification {original}"
                return [
                    note_event(
                        note,
                        "deduplicated",
                        now * 1000,
                        reason=reason,
                        discriminator=note["source"],
                    )
                ]
        out: list[Output] = [note_event(note, "accepted", now * 1000)]
        if note.get("digest"):
            return out + self._collect(state, note, now)
        return out + self._schedule(state, note, now)

    def on_due(self, state: UserState, now: float) -> list[Output]:
        """Release what is due, expire windows, flush digests."""
        out: list[Output] = []
        state.digests, digests = self.digests.flush_due(state.digests, now)
        for digest in digests:
            out += self._digested(state, digest.note, digest.item_ids, now, STAGE_QUIET)
        due = [h for h in state.held if h.due <= now]
        if due:
            state.held = [h for h in state.held if h.due > now]
            out += self._release(state, due, now)
        state.ids = self.ids.expire(state.ids, now)
        state.content = self.content.expire(state.content, now)
        state.rate = self.limiter.expire(state.rate, now)
        return out

    def collect(self, state: UserState, note: dict[str, Any], now: float) -> list[Output]:
        """Add an already accepted note (``note["digest"]`` set) to its digest: how a strategy
        sends a low-priority notification with the next digest instead of now."""
        return self._collect(state, note, now)

    def next_due(self, state: UserState) -> float | None:
        """When ``on_due`` next has work (epoch s), from the state alone."""
        due = self.ids.next_expiry(state.ids)  # called after every item: no lists built
        for candidate in (
            self.content.next_expiry(state.content),
            self.limiter.next_expiry(state.rate),
            self.digests.next_due(state.digests),
            min(h.due for h in state.held) if state.held else None,
        ):
            if candidate is not None and (due is None or candidate < due):
                due = candidate
        return due

    # --- stages ------------------------------------------------------------------------------
    def _collect(self, state: UserState, note: dict, now: float) -> list[Output]:
        state.digests, ready = self.digests.add(state.digests, note, note["digest"], now)
        out: list[Output] = []
        for digest in ready:
            out += self._digested(state, digest.note, digest.item_ids, now, STAGE_QUIET)
        return out

    def _digested(
        self, state: UserState, digest: dict, item_ids: list[str], now: float, stage: str
    ) -> list[Output]:
        """``digested`` events for the items, then the digest note goes on from ``stage``."""
        out: list[Output] = []
        for item_id in item_ids:
            item = {**digest, "id": item_id, "category": digest["category"]}
            out.append(note_event(item, "digested", now * 1000, reason=f"in digest {digest['id']}"))
        out.append(note_event(digest, "accepted", now * 1000))
        if stage == STAGE_QUIET:
            return out + self._quiet_hours(state, digest, now)
        return out + self._channels(state, digest, choose_channels(digest), now)

    def _schedule(self, state: UserState, note: dict, now: float) -> list[Output]:
        expired = self._expired(note, now)
        if expired:
            return [expired]
        send_at = note.get("send_at_ms")
        if send_at is not None and send_at / 1000 > now:
            due = send_at / 1000
            return self._hold(state, note, due, "scheduled", STAGE_QUIET, None, now)
        return self._quiet_hours(state, note, now)

    def _quiet_hours(self, state: UserState, note: dict, now: float) -> list[Output]:
        if note["priority"] != "critical":
            quiet = self._quiet_window(note)
            until = quiet_until(quiet, _utc(now), self._tz(note)) if quiet else None
            if until is not None:
                return self._hold(
                    state, note, until.timestamp(), "quiet_hours", STAGE_CHANNELS, None, now
                )
        return self._channels(state, note, choose_channels(note), now)

    def _channels(
        self, state: UserState, note: dict, channels: list[str] | tuple[str, ...], now: float
    ) -> list[Output]:
        """Per channel: local-hours rule, then caps. Emits one Release for what may go now."""
        out: list[Output] = []
        go: list[str] = []
        critical = note["priority"] == "critical"
        tenant, category = note["tenant_id"], note["category"]
        for channel in channels:
            if not addresses_for(channel, note["recipient"]):
                go.append(channel)  # nothing to wait for: the planner reports it undeliverable
                continue
            opens = None if critical else channel_open_at(channel, _utc(now), self._tz(note))
            if opens is not None:
                out += self._hold(
                    state, note, opens.timestamp(), "channel_hours", STAGE_CHANNELS, (channel,), now
                )
                continue
            decision = self.limiter.check(
                state.rate, tenant, channel, category, now, critical=critical
            )
            if decision.allowed:
                state.rate = self.limiter.record(state.rate, tenant, channel, category, now)
                go.append(channel)
            elif decision.action == "defer":
                out += self._hold(
                    state, note, decision.retry_at, "deferred", STAGE_CHANNELS, (channel,), now
                )
            else:
                out.append(
                    note_event(
                        note,
                        "rate_limited",
                        now * 1000,
                        channel=channel,
                        reason=f"over cap {decision.cap}",
                    )
                )
        if go or not channels:
            out.append(Release(note, tuple(go)))
        return out

    def _release(self, state: UserState, due: list[Held], now: float) -> list[Output]:
        out: list[Output] = []
        quiet_notes: list[Held] = []
        for held in sorted(due, key=lambda h: h.due):
            expired = self._expired(held.note, now)
            if expired:
                out.append(expired)
            elif held.reason == "quiet_hours" and held.channels is None:
                quiet_notes.append(held)
            elif held.stage == STAGE_QUIET:
                out += self._quiet_hours(state, held.note, now)
            else:
                channels = held.channels or choose_channels(held.note)
                out += self._channels(state, held.note, channels, now)
        if len(quiet_notes) > 1:  # a quiet-hours backlog goes out as one digest
            digest = merge_held([h.note for h in quiet_notes], now)
            ids = [h.note["id"] for h in quiet_notes]
            out += self._digested(state, digest, ids, now, STAGE_CHANNELS)
        elif quiet_notes:
            note = quiet_notes[0].note
            out += self._channels(state, note, choose_channels(note), now)
        return out

    def _hold(
        self,
        state: UserState,
        note: dict,
        due: float,
        reason: str,
        stage: str,
        channels: tuple[str, ...] | None,
        now: float,
    ) -> list[Output]:
        holds = note.get("_holds", 0) + 1  # counted in the note: stable event ids on replay
        note = {**note, "_holds": holds}
        channel = channels[0] if channels and len(channels) == 1 else None
        status = {"scheduled": "scheduled", "deferred": "deferred"}.get(reason, "held_quiet_hours")
        if len(state.held) >= self.config.max_held:
            return [
                note_event(
                    note,
                    "rate_limited",
                    now * 1000,
                    channel=channel,
                    reason=f"{self.config.max_held} notifications already held",
                )
            ]
        state.held.append(Held(due, reason, stage, note, channels))
        until = datetime.fromtimestamp(due, UTC).isoformat(timespec="seconds")
        return [
            note_event(
                note,
                status,
                now * 1000,
                channel=channel,
                reason=f"{reason} until {until}",
                discriminator=f"{reason}:{holds}",
            )
        ]

    # --- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _expired(note: dict, now: float) -> dict | None:
        expires = note.get("expires_at_ms")
        if expires is not None and expires <= now * 1000:
            return note_event(note, "expired", now * 1000, reason="stale: past expires_at")
        return None

    def _quiet_window(self, note: dict) -> DailyWindow | None:
        own = note["recipient"].get("quiet_hours")
        return DailyWindow.parse(own) if own else self.default_quiet

    def _tz(self, note: dict) -> str:
        return note["recipient"].get("timezone") or self.config.default_timezone


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
