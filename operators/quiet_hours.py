"""Recipient-local delivery windows: quiet hours and the SMS/voice 08:00–21:00 rule.

A ``DailyWindow`` is a half-open span ``[start, end)`` of local wall-clock time; ``start > end``
wraps midnight (22:00–08:00). Each local day ``D`` gives one occurrence, a UTC interval
``[S, E)`` (``E`` is on ``D + 1`` when the window wraps):

* ``S`` is the *first* instant the local clock reads ``start`` on ``D``: fold=0 when the time
  is repeated (fall back); when it does not exist (spring-forward gap), the first instant after
  the gap.
* ``E`` is the *last* instant the local clock reaches ``end``: fold=1 when repeated (a repeated
  hour inside quiet hours stays quiet, instead of lifting at the first 01:30 and falling again
  at the second 01:00); in a gap, the first instant after it.

So an occurrence never ends before it starts (``S <= E``; both in one gap → empty that day),
every instant whose local time is in the window is inside, and the only extra instants are
in a repeated hour. Overlapping occurrences (windows nearly 24 h long, on a DST day) merge.

Timezones are IANA names read with ``zoneinfo``; ``None``, unknown or invalid names fall back
to UTC, so a bad profile delays nothing by hours rather than stalling delivery (callers
validating profiles should check names with ``zoneinfo.available_timezones()``). Stateless:
plain functions over aware datetimes; results are aware UTC datetimes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DAY = timedelta(days=1)
#: Quiet-hours / opening-hours interplay converges in 3 steps; more means it cannot.
_MAX_RELEASE_STEPS = 4


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """Daily local wall-clock window ``[start, end)``; wraps midnight when ``start > end``."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("window times are local wall-clock times: give naive times")
        if self.start == self.end:
            raise ValueError(f"empty window: start == end ({self.start})")

    @property
    def wraps(self) -> bool:
        return self.start > self.end

    @classmethod
    def parse(cls, text: str) -> DailyWindow:
        """Parse ``"HH:MM-HH:MM"`` (seconds allowed); an end of ``24:00`` means midnight."""
        parts = text.split("-")
        if len(parts) != 2:
            raise ValueError(f"window must look like '22:00-08:00', got {text!r}")
        try:
            start = time.fromisoformat(parts[0].strip())
            end_text = parts[1].strip()
            end = time(0) if end_text in ("24:00", "24:00:00") else time.fromisoformat(end_text)
        except ValueError as exc:
            raise ValueError(f"bad time in window {text!r}: {exc}") from None
        return cls(start, end)


ALLOWED_HOURS_SMS_VOICE = DailyWindow(time(8), time(21))
#: Channels that may only be sent inside ``ALLOWED_HOURS_SMS_VOICE`` (unless critical).
TIME_RESTRICTED_CHANNELS = frozenset({"sms", "voice"})


@lru_cache(maxsize=1024)
def zone(name: str | None) -> tzinfo:
    """The zone for an IANA name; ``None``, unknown or invalid names → UTC."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: pass an aware (UTC) datetime")
    return moment.astimezone(UTC)


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _resolve(day: date, at: time, zone: tzinfo, *, last: bool) -> datetime:
    """The UTC instant the local clock reads ``day at``: repeated → first (or ``last``);
    non-existent → the first instant after the gap."""
    naive = datetime.combine(day, at)
    local = naive.replace(tzinfo=zone)
    if local.utcoffset() == local.replace(fold=1).utcoffset():  # the usual case
        return local.astimezone(UTC)
    first, second = local.astimezone(UTC), local.replace(fold=1).astimezone(UTC)
    lo, hi = min(first, second), max(first, second)
    if _wall(lo, zone) == naive and _wall(hi, zone) == naive:  # repeated (fall back)
        return hi if last else lo
    # Gap: the wall clock jumps past ``naive`` somewhere in (lo, hi]. Transitions fall on whole
    # seconds, so bisect over seconds for the first instant reading ``>= naive``.
    lo_s, hi_s = math.floor(lo.timestamp()), math.ceil(hi.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _wall(datetime.fromtimestamp(mid, UTC), zone) >= naive:
            hi_s = mid
        else:
            lo_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


def _days(window: DailyWindow, zone: tzinfo, u: datetime) -> Iterable[tuple[date, datetime]]:
    """Local days around ``u`` whose occurrence could contain or follow it, with their ``S``
    (ascending)."""
    today = u.astimezone(zone).date()
    for offset in (-1, 0, 1, 2):
        day = today + offset * _DAY
        yield day, _resolve(day, window.start, zone, last=False)


def _end(window: DailyWindow, zone: tzinfo, day: date) -> datetime:
    """``E`` of the occurrence starting on local ``day``."""
    return _resolve(day + _DAY if window.wraps else day, window.end, zone, last=True)


def _occurrence_end(window: DailyWindow, zone: tzinfo, u: datetime) -> datetime | None:
    latest = None
    for day, start in _days(window, zone, u):
        if start > u:
            break
        end = _end(window, zone, day)
        if u < end and (latest is None or end > latest):
            latest = end
    return latest


def contains(window: DailyWindow, moment_utc: datetime, tz: str | None) -> bool:
    """Whether ``moment_utc`` is inside ``window`` in zone ``tz`` (see module docstring)."""
    return _occurrence_end(window, zone(tz), _as_utc(moment_utc)) is not None


def next_boundary_out(window: DailyWindow, moment_utc: datetime, tz: str | None) -> datetime | None:
    """If inside ``window``: the earliest instant ``> moment_utc`` that is outside (UTC); else
    ``None``."""
    local = zone(tz)
    end = _occurrence_end(window, local, _as_utc(moment_utc))
    if end is None:
        return None
    while (later := _occurrence_end(window, local, end)) is not None:  # merged occurrences
        end = later
    return end


def next_boundary_in(window: DailyWindow, moment_utc: datetime, tz: str | None) -> datetime | None:
    """If outside ``window``: the earliest instant ``> moment_utc`` that is inside (UTC); else
    ``None``. Days on which the window does not exist (it lies in a DST gap) are skipped."""
    local, u = zone(tz), _as_utc(moment_utc)
    if _occurrence_end(window, local, u) is not None:
        return None
    return min(
        start for day, start in _days(window, local, u) if u < start < _end(window, local, day)
    )


def quiet_until(quiet: DailyWindow | None, moment_utc: datetime, tz: str | None) -> datetime | None:
    """When quiet hours end (UTC) if ``moment_utc`` is inside them; else ``None``."""
    return None if quiet is None else next_boundary_out(quiet, moment_utc, tz)


def channel_open_at(channel: str, moment_utc: datetime, tz: str | None) -> datetime | None:
    """For SMS and voice outside 08:00–21:00 local: the next 08:00 local (UTC); else ``None``."""
    if channel not in TIME_RESTRICTED_CHANNELS:
        return None
    return next_boundary_in(ALLOWED_HOURS_SMS_VOICE, moment_utc, tz)


def release_time(
    moment_utc: datetime,
    tz: str | None,
    quiet: DailyWindow | None,
    channels: Iterable[str],
    critical: bool = False,
) -> dict[str, datetime | None]:
    """Per channel, when it may be sent (UTC); ``None`` = now.

    Quiet hours hold every channel and SMS/voice also wait for 08:00–21:00 local; the result is
    the first instant satisfying both. Critical notifications bypass both. If quiet hours cover
    all of 08:00–21:00 (nothing satisfies both), the SMS/voice hours win: the message goes at the
    first opening after quiet hours end.
    """
    u = _as_utc(moment_utc)
    by_rule: dict[bool, datetime | None] = {}  # restricted channel? → release time
    for channel in channels:
        restricted = channel in TIME_RESTRICTED_CHANNELS
        if not critical and restricted not in by_rule:
            by_rule[restricted] = _release(u, tz, quiet, channel)
    return {channel: by_rule.get(channel in TIME_RESTRICTED_CHANNELS) for channel in channels}


def _release(
    u: datetime, tz: str | None, quiet: DailyWindow | None, channel: str
) -> datetime | None:
    at, fallback = u, None
    for _ in range(_MAX_RELEASE_STEPS):
        at = quiet_until(quiet, at, tz) or at
        opens = channel_open_at(channel, at, tz)
        if opens is None:
            break
        fallback = fallback or opens
        at = opens
    else:
        at = fallback or at
    return None if at == u else at
