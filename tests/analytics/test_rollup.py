"""operators.rollup: window assignment at the boundaries, pre-aggregation, folding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from operators.event_table import from_dicts
from operators.rollup import (
    EPOCH,
    WINDOW,
    Aggregate,
    Dims,
    RollupRow,
    closed_rows,
    dims_of,
    fold,
    merge,
    partial_key,
    partial_time,
    stage,
    window_start,
)

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
EMAIL = Dims("acme", "email", "smtp", "sent")


def event(n: int, at: datetime | str, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "event_id": f"e{n}",
        "tenant_id": "acme",
        "status": "sent",
        "channel": "email",
        "provider": "smtp",
        "occurred_at": at if isinstance(at, str) else at.isoformat().replace("+00:00", "Z"),
    }
    values.update(fields)
    return values


def test_window_start_boundaries() -> None:
    assert window_start(T) == T
    assert window_start(T + timedelta(seconds=59, microseconds=999_999)) == T
    assert window_start(T + timedelta(seconds=60)) == T + WINDOW
    assert window_start(T - timedelta(microseconds=1)) == T - WINDOW
    plus_two = datetime(2026, 11, 20, 12, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert window_start(plus_two) == T
    assert (window_start(T) - EPOCH) % WINDOW == timedelta(0)


def test_stage_groups_by_minute_tenant_and_dims_with_exact_boundaries() -> None:
    events = [
        event(1, T + timedelta(seconds=59, milliseconds=999), latency_ms=10.0, cost_usd=0.5),
        event(2, T + timedelta(seconds=60), latency_ms=30.0),  # first instant of next minute
        event(3, T, latency_ms=20.0, cost_usd=0.25),
        event(4, T + timedelta(seconds=5)),  # no latency, no cost
        event(5, "2026-11-20T12:00:30+02:00", channel=None, provider=None, status="accepted"),
        event(6, T + timedelta(seconds=1), tenant_id="globex"),
    ]
    partials = stage(from_dicts(events))
    assert [(p.window_start, p.tenant_id) for p in partials] == [
        (T, "acme"),
        (T, "globex"),
        (T + WINDOW, "acme"),
    ]  # earliest window first, so a batch never makes its own events late
    first = partials[0]
    assert first.groups == {
        EMAIL: Aggregate(3, 2, 30.0, 20.0, 0.75),
        Dims("acme", "", "", "accepted"): Aggregate(1, 0, 0.0, 0.0, 0.0),
    }
    assert sorted(first.events.column("event_id").to_pylist()) == ["e1", "e3", "e4", "e5"]
    assert first.max_occurred_at == T + timedelta(seconds=59, milliseconds=999)
    assert partials[2].groups == {EMAIL: Aggregate(1, 1, 30.0, 30.0, 0.0)}
    assert partial_key(partials[1]) == "globex"
    assert partial_time(partials[2]) == T + WINDOW
    assert dims_of(events[4]) == Dims("acme", "", "", "accepted")
    assert stage(from_dicts([])) == []


def test_fold_merge_and_closed_rows() -> None:
    (partial,) = stage(
        from_dicts([event(1, T, latency_ms=5.0, cost_usd=1.0), event(2, T, latency_ms=7.0)])
    )
    state = fold(fold({}, partial), partial)
    assert state == {EMAIL: Aggregate(4, 4, 24.0, 7.0, 2.0)}
    other = {
        EMAIL: Aggregate(1, 1, 100.0, 100.0, 0.0),
        Dims("acme", "sms", "", "sent"): Aggregate(2),
    }
    merged = merge(state, other)
    assert merged[EMAIL] == Aggregate(5, 5, 124.0, 100.0, 2.0)
    assert merged[Dims("acme", "sms", "", "sent")] == Aggregate(2)
    assert state[EMAIL].events == 4  # merge leaves its inputs alone
    window_id = (T - EPOCH) // WINDOW
    assert closed_rows(window_id, merged) == [
        RollupRow(T, EMAIL, merged[EMAIL]),
        RollupRow(T, Dims("acme", "sms", "", "sent"), Aggregate(2)),
    ]
