"""The analytics flow end to end in-process with real chDB: window boundaries, late events,
replays (fresh state, different batching, crash + recovery) and the DLQ.

Windows are one minute on event time; the watermark trails the tenant's newest event by
10 s. K = acme/email/smtp/sent. Input, one record per source batch (offsets = seconds after
10:00): A 5, B 59.999, C 60.000, D 90 (closes acme's 10:00), E 40 (late), F 75 (late: behind
the watermark though 10:01 is open), G 20 (late); then globex H 30 (on time: watermarks are
per tenant); one malformed record.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bytewax.testing import TestingSource
from clickhouse_connect.driver.client import Client

from notiflow import clickhouse as ch
from notiflow.settings import Settings
from operators.rollup import window_start
from tests.analytics.flowrun import event, raw_count, records, rollups, run

K = ("acme", "email", "smtp", "sent")
SMS = ("globex", "sms", "twilio", "sent")
EVENTS = [
    event(1, 5),
    event(2, 59.999),
    event(3, 60),
    event(4, 90),
    event(5, 40),
    event(6, 75),
    event(7, 20),
    event(8, 30, tenant_id="globex", channel="sms", provider="twilio", cost_usd=0.0075),
]
# (events, latency_events, latency_sum, latency_max, cost, late_events)
EXPECTED = {
    ("10:00", *K): (4, 4, 1 + 2 + 5 + 7.0, 7.0, 0.0, 2),  # A B + late E G
    ("10:01", *K): (3, 3, 3 + 4 + 6.0, 6.0, 0.0, 1),  # C D + late F
    ("10:00", *SMS): (1, 1, 8.0, 8.0, 0.0075, 0),
}


@pytest.fixture
def settings(db_settings: Settings) -> Settings:
    return db_settings.model_copy(update={"analytics_flush_seconds": 0.1})


def test_windows_boundaries_late_events_and_dlq(
    client: Client, database: str, settings: Settings
) -> None:
    table = f"{database}.delivery_rollup_1m"
    client.command(f"SYSTEM STOP MERGES {table}")  # keep every row version for the history
    dlq: list = []
    items = records([*EVENTS[:4], b"{not json", *EVENTS[4:]])
    # pause after D: the closed 10:00 row is written by the flow before E arrives late
    items.insert(5, TestingSource.PAUSE(timedelta(seconds=0.6)))
    run(settings, items, dlq=dlq)

    assert rollups(client, database) == EXPECTED
    assert raw_count(client, database) == 8
    history = client.query(
        f"SELECT computed_by FROM {table} WHERE window_start = '2026-11-20 10:00:00' "
        "AND channel = 'email' ORDER BY version"
    ).result_rows
    assert history[0] == ("flow",) and history[-1] == ("raw",)  # flow figures, then merged
    sms_rows = client.query(f"SELECT computed_by FROM {table} WHERE channel = 'sms'").result_rows
    assert sms_rows == [("flow",)]  # never late: the flow's own figures
    late = client.query(
        f"SELECT event_id, formatDateTime(window_start, '%H:%i') "
        f"FROM {database}.delivery_late_events FINAL ORDER BY event_id"
    ).result_rows
    assert late == [("e5", "10:00"), ("e6", "10:01"), ("e7", "10:00")]
    assert len(dlq) == 1 and dlq[0].value == b"{not json"


def test_replays_never_double_count(
    client: Client, database: str, settings: Settings, tmp_path: Path
) -> None:
    run(settings, records(EVENTS))
    first = rollups(client, database)
    assert first == EXPECTED
    run(settings, records(EVENTS))  # the whole topic again, fresh flow state
    assert rollups(client, database) == EXPECTED
    run(settings, records(EVENTS), batch_size=100)  # one batch: nothing late this time
    assert rollups(client, database) == EXPECTED  # late_events: ever late, by event id
    assert raw_count(client, database) == 8
    computed = client.query(
        f"SELECT DISTINCT computed_by FROM {database}.delivery_rollup_1m FINAL"
    ).result_rows
    assert computed == [("raw",)]  # replays rewrite rows from the deduplicated raw table


def test_crash_and_resume_from_recovery(
    client: Client, database: str, settings: Settings, tmp_path: Path
) -> None:
    pause = TestingSource.PAUSE(timedelta(seconds=0.4))  # lets the first five be written
    items = records([*EVENTS[:5], pause, TestingSource.ABORT(), *EVENTS[5:]])
    run(settings, items, recovery=tmp_path / "recovery")  # stops abruptly after E
    assert raw_count(client, database) == 5
    run(settings, items, recovery=tmp_path / "recovery")  # resumes from the last snapshot
    assert rollups(client, database) == EXPECTED
    assert raw_count(client, database) == 8


def test_startup_backfills_windows_a_previous_run_left_open(
    client: Client, database: str, settings: Settings
) -> None:
    # events stored, but the process stopped before their windows closed (no recovery,
    # topic gone): the next start recomputes the missing rows from the raw table
    ch.insert_events(client, database, EVENTS)
    assert rollups(client, database) == {}
    run(settings, [])
    assert {k: v[:5] for k, v in rollups(client, database).items()} == {
        k: v[:5] for k, v in EXPECTED.items()
    }


def test_window_reopened_after_its_state_was_dropped_is_recomputed(
    client: Client, database: str, settings: Settings
) -> None:
    # Bytewax drops a tenant's window state once all its windows closed; an event for that
    # minute arriving afterwards opens the window afresh and closes it again with only
    # itself. The writer must merge it into the stored row, not replace the row with it.
    minute = window_start(datetime.now(UTC))  # event times just behind the wall clock
    first = event(1, 0, occurred_at=minute - timedelta(milliseconds=200))
    again = event(2, 0, occurred_at=minute - timedelta(seconds=30))
    items = records([first, TestingSource.PAUSE(timedelta(seconds=1.5)), again])
    run(settings, items, lateness=timedelta(milliseconds=100))
    (row,) = rollups(client, database).values()
    assert row[:4] == (2, 2, 3.0, 2.0)  # both events, however the window was closed
    late = client.command(f"SELECT count() FROM {database}.delivery_late_events")
    assert late == 0  # the flow saw no late event: the key's state was gone
