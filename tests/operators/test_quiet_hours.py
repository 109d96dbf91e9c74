from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.quiet_hours import (
    ALLOWED_HOURS_SMS_VOICE,
    DailyWindow,
    channel_open_at,
    contains,
    next_boundary_in,
    next_boundary_out,
    quiet_until,
    release_time,
)

NY, BERLIN, SYDNEY, KOLKATA = (
    "America/New_York",
    "Europe/Berlin",
    "Australia/Sydney",
    "Asia/Kolkata",
)
NIGHT = DailyWindow.parse("22:00-08:00")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- parsing and basics -------------------------------------------------------------------


def test_parse_and_wrap():
    assert DailyWindow(time(22), time(8)) == NIGHT and NIGHT.wraps
    assert not DailyWindow.parse(" 08:00 - 21:00 ").wraps
    assert DailyWindow.parse("20:00-24:00") == DailyWindow(time(20), time(0))


@pytest.mark.parametrize(
    "text", ["22:00", "22:00-08:00-09:00", "25:00-08:00", "x-y", "08:00-08:00"]
)
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        DailyWindow.parse(text)


def test_naive_moment_is_rejected():
    with pytest.raises(ValueError, match="naive"):
        contains(NIGHT, datetime(2026, 1, 1), "UTC")


@pytest.mark.parametrize("tz", [None, "", "UTC", "Not/AZone", "../etc/passwd", "America"])
def test_utc_and_unknown_zones_mean_utc(tz):
    assert contains(NIGHT, utc(2026, 1, 1, 23), tz)
    assert next_boundary_out(NIGHT, utc(2026, 1, 1, 23), tz) == utc(2026, 1, 2, 8)
    assert not contains(NIGHT, utc(2026, 1, 1, 8), tz)  # end is exclusive
    assert contains(NIGHT, utc(2026, 1, 1, 22), tz)  # start is inclusive
    assert next_boundary_in(NIGHT, utc(2026, 1, 1, 12), tz) == utc(2026, 1, 1, 22)


def test_non_wrapping_window_and_half_hour_zone():
    day = DailyWindow.parse("09:00-17:30")
    # Kolkata is UTC+05:30 all year: 09:00 IST = 03:30 UTC.
    assert not contains(day, utc(2026, 6, 1, 3, 29), KOLKATA)
    assert next_boundary_out(day, utc(2026, 6, 1, 3, 30), KOLKATA) == utc(2026, 6, 1, 12)
    assert quiet_until(NIGHT, utc(2026, 6, 1, 17), KOLKATA) == utc(2026, 6, 2, 2, 30)
    assert channel_open_at("sms", utc(2026, 6, 1, 2), KOLKATA) == utc(2026, 6, 1, 2, 30)


# --- DST: New York (2026-03-08 02:00 EST → 03:00 EDT; 2026-11-01 02:00 EDT → 01:00 EST) -----


def test_ny_spring_forward_night_is_an_hour_shorter():
    assert quiet_until(NIGHT, utc(2026, 3, 8, 3, 30), NY) == utc(2026, 3, 8, 12)  # 08:00 EDT


def test_ny_end_in_gap_resolves_to_end_of_gap():
    window = DailyWindow.parse("22:00-02:30")
    assert next_boundary_out(window, utc(2026, 3, 8, 5), NY) == utc(2026, 3, 8, 7)  # 03:00 EDT


def test_ny_start_in_gap_starts_at_end_of_gap():
    window = DailyWindow.parse("02:30-05:00")
    assert not contains(window, utc(2026, 3, 8, 6, 59), NY)  # 01:59 EST
    assert next_boundary_in(window, utc(2026, 3, 8, 6), NY) == utc(2026, 3, 8, 7)
    assert next_boundary_out(window, utc(2026, 3, 8, 7), NY) == utc(2026, 3, 8, 9)  # 05:00 EDT


def test_ny_window_inside_gap_does_not_exist_that_day():
    window = DailyWindow.parse("02:10-02:50")
    assert not contains(window, utc(2026, 3, 8, 7), NY)
    assert next_boundary_in(window, utc(2026, 3, 8, 5), NY) == utc(2026, 3, 9, 6, 10)


def test_ny_fall_back_repeated_hour_stays_quiet_until_second_end():
    window = DailyWindow.parse("22:00-01:30")
    for minute_utc in (utc(2026, 11, 1, 5, 15), utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 6, 15)):
        # 01:15 EDT, 01:45 EDT (wall clock outside, but the clock will read 01:xx again), 01:15 EST
        assert quiet_until(window, minute_utc, NY) == utc(2026, 11, 1, 6, 30)  # 01:30 EST
    assert not contains(window, utc(2026, 11, 1, 6, 30), NY)


def test_ny_fall_back_start_uses_first_occurrence_and_does_not_flap():
    window = DailyWindow.parse("01:30-06:00")
    assert next_boundary_in(window, utc(2026, 11, 1, 4), NY) == utc(2026, 11, 1, 5, 30)  # EDT
    assert contains(window, utc(2026, 11, 1, 6, 15), NY)  # 01:15 EST: before 01:30 on the wall
    assert next_boundary_out(window, utc(2026, 11, 1, 5, 30), NY) == utc(2026, 11, 1, 11)


def test_ny_sms_opens_at_local_eight_across_dst():
    assert channel_open_at("sms", utc(2026, 3, 8, 11, 30), NY) == utc(2026, 3, 8, 12)  # EDT
    assert channel_open_at("voice", utc(2026, 11, 1, 12, 30), NY) == utc(2026, 11, 1, 13)  # EST
    assert channel_open_at("sms", utc(2026, 11, 2, 2, 30), NY) == utc(2026, 11, 2, 13)  # 21:30 EST
    assert channel_open_at("sms", utc(2026, 11, 1, 15), NY) is None
    assert channel_open_at("email", utc(2026, 11, 1, 6), NY) is None


# --- DST: Berlin (2026-03-29 02:00 → 03:00; 2026-10-25 03:00 → 02:00), Sydney (south) ---------


def test_berlin_nights_around_both_transitions():
    night = DailyWindow.parse("23:00-07:00")
    assert quiet_until(night, utc(2026, 3, 28, 22, 30), BERLIN) == utc(2026, 3, 29, 5)
    assert quiet_until(night, utc(2026, 10, 24, 21, 30), BERLIN) == utc(2026, 10, 25, 6)


def test_berlin_gap_and_repeated_hour():
    assert not contains(DailyWindow.parse("02:00-02:30"), utc(2026, 3, 29, 1), BERLIN)
    repeated = DailyWindow.parse("02:30-03:30")  # 02:00–03:00 happens twice on 2026-10-25
    assert next_boundary_in(repeated, utc(2026, 10, 24, 23), BERLIN) == utc(2026, 10, 25, 0, 30)
    assert next_boundary_out(repeated, utc(2026, 10, 25, 0, 30), BERLIN) == utc(2026, 10, 25, 2, 30)


def test_sydney_autumn_and_spring():
    night = DailyWindow.parse("22:00-07:00")
    # 2026-04-05 03:00 AEDT → 02:00 AEST: the night is an hour longer.
    assert quiet_until(night, utc(2026, 4, 4, 11, 30), SYDNEY) == utc(2026, 4, 4, 21)
    # 2026-10-04 02:00 AEST → 03:00 AEDT: an hour shorter.
    assert quiet_until(night, utc(2026, 10, 3, 12, 30), SYDNEY) == utc(2026, 10, 3, 20)
    repeated = DailyWindow.parse("02:30-03:30")
    assert next_boundary_in(repeated, utc(2026, 4, 4, 14), SYDNEY) == utc(2026, 4, 4, 15, 30)
    assert next_boundary_out(repeated, utc(2026, 4, 4, 15, 30), SYDNEY) == utc(2026, 4, 4, 17, 30)


# --- release_time ------------------------------------------------------------------------


def test_release_time_combines_quiet_hours_and_sms_hours():
    quiet = DailyWindow.parse("22:00-07:00")
    at_night = utc(2026, 6, 2, 3)  # 23:00 EDT
    assert release_time(at_night, NY, quiet, ["email", "sms", "push"], False) == {
        "email": utc(2026, 6, 2, 11),  # 07:00 EDT
        "sms": utc(2026, 6, 2, 12),  # 08:00 EDT
        "push": utc(2026, 6, 2, 11),
    }
    assert release_time(at_night, NY, quiet, ["email", "sms"], True) == {"email": None, "sms": None}
    assert release_time(utc(2026, 6, 2, 16), NY, quiet, ["sms"]) == {"sms": None}
    assert release_time(at_night, NY, None, ["email", "voice"]) == {
        "email": None,
        "voice": utc(2026, 6, 2, 12),
    }


def test_release_time_sms_opening_inside_quiet_hours_waits_for_their_end():
    morning_quiet = DailyWindow.parse("07:00-10:00")
    early = utc(2026, 6, 2, 9)  # 05:00 EDT: not quiet yet, SMS closed until 08:00, then quiet
    assert release_time(early, NY, morning_quiet, ["sms", "email"]) == {
        "sms": utc(2026, 6, 2, 14),  # 10:00 EDT
        "email": None,
    }


def test_release_time_sms_hours_win_when_quiet_hours_cover_them():
    daytime_quiet = DailyWindow.parse("07:00-22:00")
    noon = utc(2026, 6, 2, 16)
    # No instant is both outside quiet hours and inside 08–21: next opening after quiet ends.
    assert release_time(noon, NY, daytime_quiet, ["sms"]) == {"sms": utc(2026, 6, 3, 12)}


# --- properties --------------------------------------------------------------------------

ZONES = sorted(available_timezones() | {"UTC", "Not/AZone"})
instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
clock = st.builds(time, st.integers(0, 23), st.sampled_from([0, 1, 15, 30, 45, 59]))
windows = st.tuples(clock, clock).filter(lambda w: w[0] != w[1]).map(lambda w: DailyWindow(*w))


def _local_length(window: DailyWindow) -> timedelta:
    day = datetime(2000, 1, 1)
    return (datetime.combine(day, window.end) - datetime.combine(day, window.start)) % timedelta(1)


def _wall_inside(window: DailyWindow, moment: datetime, tz: str) -> bool:
    zone = ZoneInfo(tz) if tz in available_timezones() else UTC
    t = moment.astimezone(zone).time().replace(tzinfo=None)
    if window.wraps:
        return t >= window.start or t < window.end
    return window.start <= t < window.end


@settings(max_examples=400, deadline=None)
@given(window=windows, moment=instants, tz=st.sampled_from(ZONES))
def test_next_boundary_out_properties(window, moment, tz):
    out = next_boundary_out(window, moment, tz)
    assert contains(window, moment, tz) == (out is not None)
    assert (next_boundary_in(window, moment, tz) is None) == (out is not None)
    if _wall_inside(window, moment, tz):
        assert out is not None  # the occurrence model covers every in-window wall-clock time
    if out is None:
        return
    assert out.tzinfo is UTC and out > moment
    assert not contains(window, out, tz)
    for k in range(1, 8):  # sampled instants before the boundary are all inside
        assert contains(window, moment + (out - moment) * k // 8, tz)
    assert contains(window, out - timedelta(seconds=1), tz)
    if timedelta(hours=24) - _local_length(window) >= timedelta(hours=2):
        assert out - moment <= timedelta(hours=25)


@settings(max_examples=400, deadline=None)
@given(window=windows, moment=instants, tz=st.sampled_from(ZONES))
def test_next_boundary_in_properties(window, moment, tz):
    start = next_boundary_in(window, moment, tz)
    if start is None:
        return
    assert start > moment and contains(window, start, tz)
    for k in range(1, 8):
        assert not contains(window, moment + (start - moment) * k // 8, tz)
    assert not contains(window, start - timedelta(seconds=1), tz)


@settings(max_examples=200, deadline=None)
@given(moment=instants, tz=st.sampled_from(ZONES), quiet=st.none() | windows)
def test_release_time_never_earlier_than_now_and_respects_rules(moment, tz, quiet):
    released = release_time(moment, tz, quiet, ["sms", "email"])
    email, sms = released["email"] or moment, released["sms"] or moment
    assert email >= moment and sms >= email
    assert quiet is None or not contains(quiet, email, tz)
    assert contains(ALLOWED_HOURS_SMS_VOICE, sms, tz)
