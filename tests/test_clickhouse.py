"""notiflow.clickhouse and notiflow.stats against a real embedded chDB.

chDB hosts one data path per process (a different path only after every client on the
previous one is closed), so the module shares one client on one path and each test works
in its own database.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from rich.console import Console

from notiflow import clickhouse as ch
from notiflow.settings import Settings
from notiflow.stats import Latency, render_summary, summary
from schemas.event import DeliveryEvent

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 21, 7, 15, 0, 123000, tzinfo=UTC)
_databases = itertools.count()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("chdb"), clickhouse_url=None)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[Client]:
    opened = ch.connect(settings)
    yield opened
    opened.close()


@pytest.fixture
def database(client: Client) -> str:
    """A fresh, migrated database."""
    name = f"test_{next(_databases)}"
    ch.migrate(client, name)
    return name


def event(n: int, **fields: Any) -> dict[str, Any]:
    """A wire DeliveryEvent dict, exactly as ``model_dump(mode="json")`` produces it."""
    values: dict[str, Any] = {
        "event_id": f"ev-{n}",
        "notification_id": f"n-{n}",
        "tenant_id": "acme",
        "user_id": f"u-{n % 5}",
        "status": "sent",
        "channel": "email",
        "requested_at": T0,
        "occurred_at": T0 + timedelta(seconds=1),
    }
    values.update(fields)
    return DeliveryEvent(**values).model_dump(mode="json")


def seed() -> list[dict[str, Any]]:
    """acme: 4 accepted, 101 sent email (latency 0..100 ms), 2 failed email, 3 sent sms
    (latency 1000 ms), 1 rejected; globex: 5 sent email (latency 7 ms) a day later."""
    events = [event(i, status="accepted", channel=None) for i in range(4)]
    events += [event(100 + i, latency_ms=float(i), provider="smtp") for i in range(101)]
    events += [event(300 + i, status="failed", reason="550 mailbox") for i in range(2)]
    events += [event(400 + i, channel="sms", latency_ms=1000.0) for i in range(3)]
    events.append(event(500, status="rejected", channel=None))
    later = T0 + timedelta(days=1)
    events += [
        event(600 + i, tenant_id="globex", latency_ms=7.0, requested_at=later, occurred_at=later)
        for i in range(5)
    ]
    return events


# --- migrations ---------------------------------------------------------------------------


def test_connect_creates_the_configured_database(client: Client, settings: Settings) -> None:
    assert client.database == settings.clickhouse_database
    databases = client.query("SELECT name FROM system.databases").result_rows
    assert (settings.clickhouse_database,) in databases


def test_migrate_creates_table_once(client: Client) -> None:
    every = [path.name for _version, path in ch.migration_files()]
    assert every[:2] == ["0001_create_delivery_events.sql", "0002_add_segments.sql"]
    assert ch.migrate(client, "test_migrate") == every
    assert ch.migrate(client, "test_migrate") == []
    versions = client.query(
        "SELECT version, name FROM test_migrate.schema_migrations ORDER BY version"
    ).result_rows
    assert versions == [(version, path.name) for version, path in ch.migration_files()]
    engine, partition, sorting = client.query(
        "SELECT engine, partition_key, sorting_key FROM system.tables "
        "WHERE database = 'test_migrate' AND name = 'delivery_events'"
    ).result_rows[0]
    assert engine == "ReplacingMergeTree"
    assert partition == "toDate(requested_at)"
    assert "event_id" in sorting and "occurred_at" not in sorting


def test_migrate_runs_files_in_order_with_several_statements(
    client: Client, tmp_path: Path
) -> None:
    (tmp_path / "0002_second.sql").write_text(
        "-- adds a row to the table 0001 made\n"
        "INSERT INTO {database}.steps VALUES (2);\n"
        "INSERT INTO {database}.steps VALUES (3)\n;\n"
    )
    (tmp_path / "0001_first.sql").write_text(
        "CREATE TABLE IF NOT EXISTS {database}.steps (n UInt8) ENGINE = MergeTree ORDER BY n;\n"
        "-- a trailing comment-only chunk is skipped\n"
    )
    (tmp_path / "README.sql").write_text("this is not a migration")
    assert ch.migrate(client, "test_order", tmp_path) == ["0001_first.sql", "0002_second.sql"]
    (tmp_path / "0003_third.sql").write_text("INSERT INTO {database}.steps VALUES (4);\n")
    assert ch.migrate(client, "test_order", tmp_path) == ["0003_third.sql"]
    assert ch.migrate(client, "test_order", tmp_path) == []
    rows = client.query("SELECT n FROM test_order.steps ORDER BY n").result_rows
    assert rows == [(2,), (3,), (4,)]


def test_duplicate_migration_versions_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0001_b.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="duplicate migration version 1"):
        ch.migration_files(tmp_path)


# --- inserts and counts --------------------------------------------------------------------


def test_insert_and_exact_counts(client: Client, database: str) -> None:
    events = seed()
    assert ch.insert_events(client, database, events) == len(events) == 116
    assert ch.insert_events(client, database, []) == 0
    assert ch.event_count(client, database) == 116
    assert ch.count_by_status(client, database) == {
        "accepted": 4,
        "failed": 2,
        "rejected": 1,
        "sent": 109,
    }


def test_stored_values_follow_the_wire(client: Client, database: str) -> None:
    full = event(
        1,
        occurred_at=T0 + timedelta(milliseconds=1500),
        attempt=2,
        latency_ms=12.5,
        cost_usd=0.0,
        priority="high",
        provider_message_id="pm-1",
    )
    sparse = {key: value for key, value in event(2, channel=None).items() if value is not None}
    del sparse["schema_version"], sparse["attempt"]
    ch.insert_events(client, database, [full, sparse])
    rows = client.query(
        "SELECT event_id, schema_version, channel, provider, priority, attempt, latency_ms,"
        " cost_usd, provider_message_id, toUnixTimestamp64Milli(requested_at),"
        f" toUnixTimestamp64Milli(occurred_at) FROM {database}.delivery_events ORDER BY event_id"
    ).result_rows
    t0_ms = int(T0.timestamp() * 1000)
    assert rows == [
        ("ev-1", 1, "email", "", "high", 2, 12.5, 0.0, "pm-1", t0_ms, t0_ms + 1500),
        ("ev-2", 1, "", "", "", 0, None, None, "", t0_ms, t0_ms + 1000),
    ]


def test_events_to_arrow_accepts_offsets_and_datetimes() -> None:
    expected = datetime(2026, 11, 21, 9, 15, 0, 250000, tzinfo=UTC)
    wire = event(1, requested_at=expected, occurred_at=expected)
    wire["occurred_at"] = "2026-11-21T11:15:00.250+02:00"
    as_datetimes = {**wire, "requested_at": expected, "occurred_at": expected}
    for row in (wire, as_datetimes):
        table = ch.events_to_arrow([row])
        assert table.column("requested_at").to_pylist() == [expected]
        assert table.column("occurred_at").to_pylist() == [expected]


def test_replayed_events_count_once(client: Client, database: str) -> None:
    table = f"{database}.delivery_events"
    client.command(f"SYSTEM STOP MERGES {table}")  # duplicates stay on disk until we merge
    events = seed()
    ch.insert_events(client, database, events)
    ch.insert_events(client, database, events + events[:10])  # replay, with repeats in-batch
    moved = [{**e, "occurred_at": "2026-12-01T00:00:00.000Z"} for e in events]
    ch.insert_events(client, database, moved)  # replay whose occurred_at differs
    assert client.command(f"SELECT count() FROM {table}") == 3 * 116 + 10
    expected = {"accepted": 4, "failed": 2, "rejected": 1, "sent": 109}
    assert ch.event_count(client, database) == 116
    assert ch.count_by_status(client, database) == expected
    assert summary(client, database).total == 116
    client.command(f"SYSTEM START MERGES {table}")
    client.command(f"OPTIMIZE TABLE {table} FINAL")
    assert client.command(f"SELECT count() FROM {table}") == 116
    assert ch.count_by_status(client, database) == expected


# --- stats -----------------------------------------------------------------------------


def test_summary_numbers(client: Client, database: str) -> None:
    ch.insert_events(client, database, seed())
    result = summary(client, database)
    assert result.counts == {
        ("", "accepted"): 4,
        ("", "rejected"): 1,
        ("email", "sent"): 106,
        ("email", "failed"): 2,
        ("sms", "sent"): 3,
    }
    assert result.channel_totals == {"": 5, "email": 108, "sms": 3}
    assert result.total == 116
    assert result.statuses == ["accepted", "rejected", "sent", "failed"]
    assert result.status_totals() == {"accepted": 4, "rejected": 1, "sent": 109, "failed": 2}
    assert result.channel_sent_latency_ms[""] is None
    assert result.channel_sent_latency_ms["sms"] == Latency(1000.0, 1000.0, 1000.0)

    acme_email = summary(client, database, tenant="acme", channel="email")
    assert acme_email.counts == {("email", "sent"): 101, ("email", "failed"): 2}
    # latencies 0..100 ms: exact quantiles with linear interpolation
    assert acme_email.sent_latency_ms == Latency(50.0, 95.0, 99.0)


def test_summary_bound_filters(client: Client, database: str) -> None:
    ch.insert_events(client, database, seed())
    later = T0 + timedelta(hours=12)
    assert summary(client, database, since=later).counts == {("email", "sent"): 5}
    naive = summary(client, database, since=later.replace(tzinfo=None))
    assert naive.total == 5 and naive.since == later
    offset = later.astimezone(timezone(timedelta(hours=2)))
    assert summary(client, database, since=offset).total == 5
    assert summary(client, database, since=T0).total == 116
    assert summary(client, database, tenant="globex").total == 5
    assert summary(client, database, channel="").counts == {
        ("", "accepted"): 4,
        ("", "rejected"): 1,
    }
    assert summary(client, database, tenant="acme", channel="sms").total == 3
    hostile = summary(client, database, tenant="acme' OR 1=1 --")
    assert hostile.total == 0 and hostile.counts == {} and hostile.sent_latency_ms is None


def test_render_summary(client: Client, database: str) -> None:
    ch.insert_events(client, database, seed())
    console = Console(record=True, width=160, color_system=None)
    render_summary(summary(client, database, tenant="acme"), console)
    text = console.export_text()
    assert "tenant acme" in text
    assert "(request)" in text
    counts_text, _, latency_text = text.partition("Latency of sent events (ms)")

    def rows(block: str) -> dict[str, str]:
        """Table rows keyed by their first cell, spaces removed."""
        cells = (line.replace(" ", "") for line in block.splitlines() if line.count("│") > 3)
        return {line.split("│")[1]: line for line in cells}

    counts = rows(counts_text)
    assert counts["email"] == "│email│·│·│101│2│103│"
    assert counts["total"] == "│total│4│1│104│2│111│"
    latency = rows(latency_text)
    assert latency["email"] == "│email│101│50.0│95.0│99.0│"
    assert latency["sms"] == "│sms│3│1,000.0│1,000.0│1,000.0│"
    assert "(request)" not in latency
    empty = Console(record=True, width=160, color_system=None)
    render_summary(summary(client, database, tenant="nobody"), empty)
    assert "No events match." in empty.export_text()


# --- the embedded engine's lock ------------------------------------------------------------


def test_locked_data_directory_raises_a_clear_error(settings: Settings, client: Client) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from notiflow.clickhouse import ClickHouseLocked, connect
        from notiflow.settings import Settings
        try:
            connect(Settings(data_dir=Path({str(settings.data_dir)!r}), clickhouse_url=None))
        except ClickHouseLocked as exc:
            print("LOCKED:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "LOCKED:" in done.stdout
    assert "stop `notiflow run` or set CLICKHOUSE_URL" in done.stdout
    assert str(settings.data_dir / "clickhouse") in done.stdout


def test_sms_segments_are_stored(client: Client, database: str) -> None:
    ch.insert_events(client, database, [event(1, channel="sms", segments=3), event(2)])
    rows = client.query(
        f"SELECT segments FROM {database}.delivery_events FINAL ORDER BY event_id"
    ).result_rows
    assert sorted(rows, key=str) == sorted([(3,), (None,)], key=str)


# --- analytics schema: rollups, failures view, retention ----------------------------------


def test_analytics_tables_design(client: Client, database: str) -> None:
    tables = {
        name: (engine, partition, sorting)
        for name, engine, partition, sorting in client.query(
            "SELECT name, engine, partition_key, sorting_key FROM system.tables "
            "WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows
    }
    assert tables["delivery_rollup_1m"] == (
        "ReplacingMergeTree",
        "toDate(window_start)",
        "tenant_id, window_start, channel, provider, status",
    )
    assert tables["delivery_late_events"][1] == "toDate(window_start)"
    assert tables["delivery_failures"][0] == "AggregatingMergeTree"
    assert tables["delivery_failures_mv"][0] == "MaterializedView"
    low_cardinality = client.query(
        "SELECT table, name FROM system.columns WHERE database = {db:String} "
        "AND type LIKE 'LowCardinality%' AND name IN ('tenant_id', 'channel', 'status')",
        parameters={"db": database},
    ).result_rows
    for table in ("delivery_events", "delivery_rollup_1m", "delivery_failures"):
        assert {name for t, name in low_cardinality if t == table} == {
            "tenant_id",
            "channel",
            "status",
        }
    indexes = client.query(
        "SELECT name, type FROM system.data_skipping_indices WHERE database = {db:String}",
        parameters={"db": database},
    ).result_rows
    assert ("idx_occurred_at", "minmax") in indexes


def test_retention_is_applied_once_and_removable(client: Client) -> None:
    name = "test_retention"
    assert ch.migrate(client, name)  # no TTL by default
    engines = "SELECT name, engine_full FROM system.tables WHERE database = 'test_retention'"

    def ttls() -> dict[str, str]:
        return {
            table: engine.partition(" TTL ")[2].partition(" SETTINGS")[0]
            for table, engine in client.query(engines).result_rows
            if " TTL " in engine
        }

    assert ttls() == {}
    assert ch.migrate(client, name, events_ttl_days=30, rollups_ttl_days=400) == []
    assert ttls() == {
        "delivery_events": "toDateTime(requested_at) + toIntervalDay(30)",
        "delivery_late_events": "toDateTime(window_start) + toIntervalDay(30)",
        "delivery_failures": "toDateTime(day) + toIntervalDay(30)",
        "delivery_rollup_1m": "toDateTime(window_start) + toIntervalDay(400)",
    }
    assert ch.apply_retention(client, name, 30, 400) == []  # already so: nothing rewritten
    assert ch.apply_retention(client, name, None, 90) == ["delivery_rollup_1m"]
    assert ch.apply_retention(client, name, 0, None) == [
        "delivery_events",
        "delivery_late_events",
        "delivery_failures",
    ]
    assert ttls() == {"delivery_rollup_1m": "toDateTime(window_start) + toIntervalDay(90)"}
    with pytest.raises(ValueError, match=">= 0"):
        ch.apply_retention(client, name, -1, None)


def test_expired_rows_are_dropped_by_ttl(client: Client, database: str) -> None:
    old = T0 - timedelta(days=400)
    ch.insert_events(client, database, [event(1, requested_at=old, occurred_at=old), event(2)])
    ch.apply_retention(client, database, 365, None)
    client.command(f"OPTIMIZE TABLE {database}.delivery_events FINAL")
    assert ch.event_count(client, database) == 1


def test_failures_view_backfills_existing_events(client: Client, tmp_path: Path) -> None:
    for path in sorted(ch.SQL_DIR.glob("000[1-46]_*.sql")):  # every column the insert writes
        (tmp_path / path.name).write_text(path.read_text())
    name = "test_failures_backfill"
    ch.migrate(client, name, tmp_path)
    failed = [event(i, status="failed", reason="550") for i in range(3)]
    ch.insert_events(client, name, [*failed, event(9)])  # stored before the view exists
    (tmp_path / "0005_failures.sql").write_text(
        (ch.SQL_DIR / "0005_create_delivery_failures.sql").read_text()
    )
    assert ch.migrate(client, name, tmp_path) == ["0005_failures.sql"]
    ch.insert_events(client, name, [*failed, event(4, status="failed", reason="550")])
    counts = client.query(
        f"SELECT reason, uniqExactMerge(event_ids) FROM {name}.delivery_failures GROUP BY reason"
    ).result_rows
    assert counts == [("550", 4)]  # three backfilled, their replay ignored, one new
