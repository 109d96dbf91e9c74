from __future__ import annotations

import pytest

from operators.event_shape import event_problem
from operators.events import make_event

GOOD = make_event(
    notification_id="n",
    tenant_id="t",
    user_id="u",
    status="sent",
    requested_at_ms=1000,
    now_ms=2000,
    latency_ms=1000.0,
    attempt=1,
)


def test_events_we_produce_pass():
    assert event_problem(GOOD) is None


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"event_id": None}, "event_id"),
        ({"status": 3}, "status"),
        ({"channel": ["email"]}, "channel"),
        ({"latency_ms": "fast"}, "latency_ms"),
        ({"attempt": -1}, "attempt"),
        ({"requested_at": "yesterday"}, "requested_at"),
        ({"occurred_at": "2026-01-01T00:00:00"}, "timezone"),
    ],
)
def test_broken_events_are_named(change, fragment):
    assert fragment in event_problem({**GOOD, **change})


def test_non_objects():
    assert event_problem([1, 2]) == "event is not a JSON object"
