"""The columnar decode (operators.event_table) agrees with the per-record check and decode.

Arrow parses a whole source batch at once; whatever it accepts must be what
``event_problem`` accepts, and whatever it refuses sends the batch down the per-record path,
which names the bad records for the DLQ. The stored values must be the same either way.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from flows.analytics import decode_batch
from notiflow.kafka.source import Record, SourceError
from operators import event_table, rollup
from operators.event_shape import event_problem
from operators.events import make_event
from operators.parse import Rejection

T0_MS = 1_795_000_000_000  # 2026-11-18


def event(n: int, **fields: Any) -> dict[str, Any]:
    wire = make_event(
        notification_id=f"n{n}",
        tenant_id=("acme", "globex")[n % 2],
        user_id=f"u{n}",
        status=("sent", "failed", "accepted")[n % 3],
        channel=None if n % 3 == 2 else "email",
        provider=None if n % 3 == 2 else "smtp",
        requested_at_ms=T0_MS + n * 7_000,
        now_ms=T0_MS + n * 7_000 + 250,
        latency_ms=float(n) if n % 3 == 0 else None,
        cost_usd=0.01 if n % 4 == 0 else None,
        attempt=1,
    )
    wire.update(fields)
    return wire


def records(events: list[Any]) -> list[Record]:
    return [
        Record(
            "ev", 0, offset, None, value if isinstance(value, bytes) else orjson.dumps(value), 1, ()
        )
        for offset, value in enumerate(events)
    ]


GOOD = [event(n) for n in range(40)]

BROKEN: list[Any] = [  # each alone must make the whole batch fall back, and be named
    {**GOOD[0], "event_id": None},
    {**GOOD[0], "event_id": ""},
    {**GOOD[0], "user_id": 7},
    {**GOOD[0], "channel": ["email"]},
    {**GOOD[0], "latency_ms": "fast"},
    {**GOOD[0], "latency_ms": True},
    {**GOOD[0], "attempt": -1},
    {**GOOD[0], "attempt": 1.5},
    {**GOOD[0], "requested_at": "yesterday"},
    {**GOOD[0], "occurred_at": "2026-01-01T00:00:00"},  # no timezone
    {key: value for key, value in GOOD[0].items() if key != "occurred_at"},
    [1, 2],
    b"\x00\x01",
    b"",
    b'{"event_id": "x"}\n{"event_id": "y"}',
]


def test_a_clean_batch_is_one_table_equal_to_the_per_record_path() -> None:
    [table] = decode_batch(records(GOOD))
    assert table.equals(event_table.from_dicts(GOOD))
    assert table.num_rows == 40
    assert table.column("occurred_at").type == event_table.STORED_TIME


@pytest.mark.parametrize("bad", BROKEN, ids=range(len(BROKEN)))
def test_a_bad_record_sends_the_batch_record_by_record(bad: Any) -> None:
    batch = records([*GOOD[:10], bad, *GOOD[10:20]])
    assert event_table.parse([record.value or b"" for record in batch]) is None
    table, rejection = decode_batch(batch)
    assert isinstance(rejection, Rejection) and rejection.source == "ev/0/10"
    assert rejection.value == batch[10].value  # the original bytes, for the DLQ
    assert table.equals(event_table.from_dicts(GOOD[:20]))


def test_whatever_arrow_accepts_the_record_check_accepts() -> None:
    variants = [
        {**GOOD[0], "occurred_at": "2026-11-18T10:00:00.123+02:00"},
        {**GOOD[0], "latency_ms": 3},  # an integer latency is a number
        {**GOOD[0], "surprise": {"nested": True}},  # unknown fields are ignored
        {key: value for key, value in GOOD[0].items() if key != "attempt"},
    ]
    for variant in variants:
        assert event_problem(variant) is None
        table = event_table.parse([orjson.dumps(variant)])
        assert table is not None and table.num_rows == 1
    offset = event_table.parse([orjson.dumps(variants[0])])
    assert offset.column("occurred_at")[0].as_py() == datetime(2026, 11, 18, 8, 0, 0, 123000, UTC)


def test_source_errors_take_the_record_path() -> None:
    batch: list[Record | SourceError] = [*records(GOOD[:3]), SourceError("ev", 0, 3, "boom")]
    table, rejection = decode_batch(batch)
    assert table.num_rows == 3 and isinstance(rejection, Rejection)


def _reference_stage(events: list[dict[str, Any]]) -> dict[tuple[datetime, str], rollup.Groups]:
    """The per-event definition of the rollup figures, written out plainly."""
    cells: dict[tuple[datetime, str], rollup.Groups] = {}
    for wire in events:
        moment = datetime.fromisoformat(wire["occurred_at"])
        groups = cells.setdefault((rollup.window_start(moment), wire["tenant_id"]), {})
        latency, cost = wire.get("latency_ms"), wire.get("cost_usd")
        one = rollup.Aggregate(
            1,
            int(latency is not None),
            float(latency or 0.0),
            float(latency or 0.0),
            float(cost or 0.0),
        )
        dims = rollup.dims_of(wire)
        groups[dims] = one if dims not in groups else groups[dims].merge(one)
    return cells


def test_vectorised_stage_matches_the_per_event_definition() -> None:
    events = [event(n) for n in range(500)]
    partials = rollup.stage(event_table.from_dicts(events))
    assert {(p.window_start, p.tenant_id): p.groups for p in partials} == _reference_stage(events)
    assert [p.window_start for p in partials] == sorted(p.window_start for p in partials)
    for partial in partials:
        ids = partial.events.column("event_id").to_pylist()
        assert len(ids) == sum(a.events for a in partial.groups.values())
        latest = max(
            datetime.fromisoformat(e["occurred_at"]) for e in events if e["event_id"] in ids
        )
        assert partial.max_occurred_at == latest
        assert partial.window_start <= latest < partial.window_start + timedelta(minutes=1)


def test_a_pickled_partial_carries_only_its_own_events() -> None:
    whole = event_table.from_dicts([event(n) for n in range(500)])
    partial = rollup.stage(whole)[3]
    copy = pickle.loads(pickle.dumps(partial))
    assert copy == partial and copy.events.equals(partial.events)
    assert len(pickle.dumps(partial)) < len(pickle.dumps(whole)) / 10
