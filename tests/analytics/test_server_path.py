"""The server path (``CLICKHOUSE_URL=http://...``): migrations, inserts, the analytics writer,
every query, ``notiflow stats`` and the analytics flow, over clickhouse-connect's HTTP client.

The server is ``notiflow.devservices.clickhouse_http``: ClickHouse's HTTP interface in front
of chDB in a child process (no ClickHouse server binary on these machines). Answers are
compared with the embedded backend (the module's in-process chDB ``client``) on the same
data, and the hand-counted expectations of ``test_queries`` are run over HTTP as they are.
"""

from __future__ import annotations

import gzip
import inspect
import json
import math
import re
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote, urlencode

import orjson
import pytest
from bytewax.testing import run_main
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from flows.analytics import build_flow
from notiflow import clickhouse as ch
from notiflow import metrics, queries
from notiflow.cli import main
from notiflow.devservices.clickhouse_http import ClickHouseHttpServer
from notiflow.kafka.admin import ensure_topics
from notiflow.kafka.clickhouse_sink import AnalyticsWriter, Written, backfill_rollups
from notiflow.netutil import free_port
from notiflow.report import INDEX_HTML
from notiflow.settings import Settings
from operators.event_table import from_dicts
from operators.rollup import EPOCH, WINDOW, closed_rows, fold, stage, window_start
from tests.analytics import test_outage as outage
from tests.analytics import test_queries as hand_counted
from tests.analytics.flowrun import LATENESS, T, event, raw_count, records, rollups, run
from tests.analytics.seed import T0, ab_events, seed_events
from tests.analytics.test_kafka_e2e import PARTITIONS, BoundedSource, expected, found, produce
from tests.analytics.test_kafka_e2e import workload as e2e_workload
from tests.analytics.test_report import CHARTS, assert_real_chart

PASSWORD = "p@ss:w/rd"  # characters that need quoting in a URL
SEED_DB, AB_DB = "server_seed", "server_ab"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHttpServer]:
    data_dir = tmp_path_factory.mktemp("clickhouse-http")
    with ClickHouseHttpServer(user="analyst", password=PASSWORD, data_dir=data_dir) as running:
        yield running
    assert "Traceback" not in (data_dir / "server.log").read_text()  # no stand-in bug met


@pytest.fixture(scope="module")
def http_settings(server: ClickHouseHttpServer, ch_settings: Settings) -> Settings:
    return ch_settings.model_copy(update={"clickhouse_url": server.url})


@pytest.fixture(scope="module")
def http_client(http_settings: Settings) -> Iterator[Client]:
    opened = ch.connect(http_settings)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def seeded(client: Client, http_client: Client) -> None:
    """The same seed in ``SEED_DB``/``AB_DB`` on both backends, inserted twice (a replay)."""
    for backend in (client, http_client):
        for database, events in ((SEED_DB, seed_events()), (AB_DB, ab_events())):
            ch.migrate(backend, database)
            ch.insert_events(backend, database, events)
            ch.insert_events(backend, database, events)
        assert backfill_rollups(backend, SEED_DB) > 0


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, server: ClickHouseHttpServer, tmp_path: Path) -> None:
    monkeypatch.setenv("CLICKHOUSE_URL", server.url)
    monkeypatch.setenv("NOTIFLOW_DATA_DIR", str(tmp_path / "unused"))
    monkeypatch.setenv("NOTIFLOW_LOG_LEVEL", "WARNING")


def comparable(value: Any) -> Any:
    """A value with its type, NaN made equal to itself, for exact comparisons."""
    if isinstance(value, list | tuple):
        return [comparable(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def schema(client: Client, database: str) -> dict[str, str]:
    result = client.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = {db:String}",
        parameters={"db": database},
    )
    return {name: sql.replace(database, "<db>") for name, sql in result.result_rows}


def test_stand_in_speaks_clickhouse_http(server: ClickHouseHttpServer) -> None:
    """The protocol itself, without clickhouse-connect: what a server answers, as it answers."""
    base = f"http://{server.host}:{server.port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy

    def call(sql: bytes, headers: dict[str, str] | None = None, **params: str) -> Any:
        headers = {"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": PASSWORD, **(headers or {})}
        request = urllib.request.Request(f"{base}?{urlencode(params)}", sql, headers)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except HTTPError as error:
            return error.code, error.headers, error.read()

    with opener.open(f"{base}ping", timeout=10) as response:
        assert response.read() == b"Ok.\n"
    status, headers, body = call(b"SELECT 1 + {x:UInt8} AS y", param_x="41",
                                 default_format="JSONEachRow")  # fmt: skip
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b'{"y":42}\n', "JSONEachRow")
    status, headers, _ = call(b"CREATE TABLE IF NOT EXISTS default.kv (k String, v UInt8) "
                              b"ENGINE = Memory")  # fmt: skip
    assert status == 200 and "X-ClickHouse-Format" not in headers  # no result set
    data = gzip.compress(b"a\t1\nb\t2\n")  # statement in the parameter, data in the body
    _, headers, _ = call(
        data, {"Content-Encoding": "gzip"}, query="INSERT INTO default.kv FORMAT TSV"
    )
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    threads = b"SELECT value FROM system.settings WHERE name = 'max_threads'"
    assert call(threads, session_id="s1", max_threads="3")[2] == b"3\n"
    assert call(threads, session_id="s1")[2] != b"3\n"  # a request's settings do not stick
    _, headers, body = call(b"SELECT sum(v) FROM default.kv", {"Accept-Encoding": "gzip"},
                            enable_http_compression="1")  # fmt: skip
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == b"3\n"
    for sql, params, (http, code, name) in [
        (b"SELECT * FROM default.nope", {}, (404, "60", b"(UNKNOWN_TABLE)")),
        (b"SELEC 1", {}, (400, "62", b"(SYNTAX_ERROR)")),
        (b"SELECT 1", {"no_such_setting": "1"}, (404, "115", b"(UNKNOWN_SETTING)")),
    ]:
        status, headers, body = call(sql, **params)
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (http, code)
        assert body.startswith(f"Code: {code}. DB::Exception: ".encode())
        assert name in body and b"(version " in body
    status, headers, body = call(b"SELECT 1", {"X-ClickHouse-Key": "wrong"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    assert b"Authentication failed" in body


def test_migrate_cli_applies_every_migration(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    server: ClickHouseHttpServer, client: Client, http_client: Client,
) -> None:  # fmt: skip
    monkeypatch.setenv("NOTIFLOW_CLICKHOUSE_DATABASE", "server_cli")
    monkeypatch.setenv("CLICKHOUSE_URL", f"{server.url}/server_cli")  # a database not made yet
    assert main(["migrate"]) == 0
    files = [path.name for _, path in ch.migration_files()]
    assert " ".join(capsys.readouterr().out.split()) == f"applied: {', '.join(files)}"
    assert main(["migrate"]) == 0
    assert "up to date" in capsys.readouterr().out
    applied = http_client.query("SELECT version FROM server_cli.schema_migrations FINAL")
    assert sorted(row[0] for row in applied.result_rows) == [v for v, _ in ch.migration_files()]
    defaults = Settings()
    ch.migrate(
        client,
        "server_cli",
        events_ttl_days=defaults.analytics_retention_days,
        rollups_ttl_days=defaults.analytics_rollup_retention_days,
    )
    tables = schema(http_client, "server_cli")
    assert {ch.EVENTS_TABLE, ch.ROLLUP_TABLE, ch.LATE_TABLE, ch.FAILURES_TABLE} <= set(tables)
    assert tables == schema(client, "server_cli")  # the same DDL, TTLs included


def test_insert_events_and_counts(client: Client, http_client: Client) -> None:
    events = seed_events()
    typed = [  # the other wire shape events_to_arrow takes: aware datetimes
        {**e, **{k: datetime.fromisoformat(e[k]) for k in ("requested_at", "occurred_at")}}
        for e in events
    ]
    counts = {}
    for backend in (client, http_client):
        ch.migrate(backend, "server_inserts")
        assert ch.insert_events(backend, "server_inserts", events) == len(events)
        assert ch.insert_events(backend, "server_inserts", typed) == len(events)  # a replay
        assert ch.event_count(backend, "server_inserts") == len(events)
        counts[backend] = ch.count_by_status(backend, "server_inserts")
    assert counts[http_client] == dict(sorted(Counter(e["status"] for e in events).items()))
    assert counts[http_client] == counts[client]
    sql = (
        "SELECT event_id, requested_at, campaign_id, segments, reason FROM "
        "server_inserts.delivery_events FINAL WHERE notification_id = 'n3' ORDER BY occurred_at"
    )
    stored = http_client.query(sql).result_rows
    assert stored[0] == ("n3-accepted-0", T0.replace(tzinfo=None) + timedelta(seconds=20), "c1",
                         None, "")  # fmt: skip
    assert stored[2][3] == 2  # sms segments; absent strings took the column default ''
    assert stored == client.query(sql).result_rows


def write_sequence(client: Client, database: str) -> tuple[list[Written], Any, int, int]:
    """Raw events and flow rows, then a late event, then the first batch replayed by a fresh
    writer (a restarted flow); returns what each write did and the tables' contents."""
    ch.migrate(client, database)
    events = [event(n, n * 7.0, tenant_id=("acme", "globex")[n % 2]) for n in range(20)]
    groups: dict[datetime, dict] = {}
    for partial in stage(from_dicts(events)):
        fold(groups.setdefault(partial.window_start, {}), partial)
    rows = [
        row
        for start, g in sorted(groups.items())
        for row in closed_rows((start - EPOCH) // WINDOW, g)
    ]
    writer = AnalyticsWriter(client, database)
    late = stage(from_dicts([event(99, 3.0, latency_ms=500.0)]))  # into the first, written window
    results = [writer.write([events, *rows]), writer.write(late)]
    replay = AnalyticsWriter(client, database)
    results.append(replay.write([events, *rows]))
    late_rows = client.command(f"SELECT count() FROM {database}.delivery_late_events FINAL")
    return results, rollups(client, database), raw_count(client, database), int(late_rows)


def test_analytics_writer_raw_rows_and_rollups(client: Client, http_client: Client) -> None:
    written, table, raw, late = write_sequence(http_client, "server_writer")
    windows = {window_start(T + timedelta(seconds=n * 7.0)) for n in range(20)}
    flow_rows = written[0].flow_rows
    assert written[0] == Written(events=20, flow_rows=flow_rows, recomputed=0, late_events=0)
    assert flow_rows == len(table) and flow_rows >= 2 * len(windows)  # two tenants per window
    assert written[1] == Written(events=0, flow_rows=0, recomputed=1, late_events=1)
    assert written[2] == Written(events=20, flow_rows=0, recomputed=flow_rows, late_events=0)
    assert (raw, late) == (21, 1)
    # acme's first minute: events 0, 2, 4, 6, 8 (latency n ms) and the late one (500 ms)
    assert table[("10:00", "acme", "email", "smtp", "sent")] == (6, 6, 520.0, 500.0, 0.0, 1)
    assert (written, table, raw, late) == write_sequence(client, "server_writer")


def hand_counted_tests() -> list[str]:
    return sorted(name for name in dir(hand_counted) if name.startswith("test_"))


@pytest.mark.parametrize("name", hand_counted_tests())
def test_hand_counted_answers_over_http(name: str, http_client: Client, seeded: None) -> None:
    """``test_queries``' own expectations, each run against the server."""
    check = getattr(hand_counted, name)
    given = {"client": http_client, "seeded": SEED_DB, "ab_seeded": AB_DB}
    check(**{param: given[param] for param in inspect.signature(check).parameters})


FILTERS: list[dict[str, Any]] = [
    {},
    {"tenant": "acme", "channel": "email"},
    {"since": T0 + timedelta(hours=1), "until": T0 + 3 * timedelta(days=1)},
    {"notification_id": "n3"},
    {"user_id": "u1", "experiment": "welcome", "campaign_id": "c1"},
]


@pytest.mark.parametrize("name", queries.names())
def test_every_query_same_answer_as_embedded(
    name: str, client: Client, http_client: Client, seeded: None
) -> None:
    answered = 0
    for database in (SEED_DB, AB_DB):
        for filters in FILTERS:
            params = {"bucket_seconds": 3600, **filters}
            embedded = queries.run_filtered(client, database, name, **params)
            served = queries.run_filtered(http_client, database, name, **params)
            assert served.columns == embedded.columns
            assert comparable(served.rows) == comparable(embedded.rows), (database, filters)
            answered += bool(served.rows)
    assert answered  # not only empty answers


def test_stats_cli_tables_and_report(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    ch_settings: Settings, tmp_path: Path, seeded: None,
) -> None:  # fmt: skip
    monkeypatch.setenv("NOTIFLOW_CLICKHOUSE_DATABASE", SEED_DB)
    assert main(["stats", "--report", str(tmp_path / "served")]) == 0
    served = capsys.readouterr().out
    assert "Delivery events" in served and "Delivery funnel" in served
    assert "Provider outcomes" in served and "Latency of sent events" in served
    for chart in CHARTS:
        assert_real_chart(tmp_path / "served" / chart)
    page = (tmp_path / "served" / INDEX_HTML).read_text()
    assert "<td>events</td><td>29</td>" in page

    monkeypatch.delenv("CLICKHOUSE_URL")  # the same, embedded (the module's chDB path)
    monkeypatch.setenv("NOTIFLOW_DATA_DIR", str(ch_settings.data_dir))
    assert main(["stats", "--report", str(tmp_path / "embedded")]) == 0
    embedded = capsys.readouterr().out
    tables = served.split("report written")[0]
    assert tables == embedded.split("report written")[0]
    generated = re.compile(r"generated [0-9: -]+ UTC")
    assert generated.sub("", page) == generated.sub(
        "", (tmp_path / "embedded" / INDEX_HTML).read_text()
    )


def test_wrong_password_is_a_clear_error(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, server: ClickHouseHttpServer,
    http_settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    wrong = server.url.replace(quote(PASSWORD, safe=""), "not-the-password")
    assert wrong != server.url
    with pytest.raises(DatabaseError) as raised:
        ch.connect(http_settings.model_copy(update={"clickhouse_url": wrong}))
    message = str(raised.value)
    assert "Authentication failed" in message and "AUTHENTICATION_FAILED" in message
    assert raised.value.code == 516 and "not-the-password" not in message  # not leaked
    monkeypatch.setenv("CLICKHOUSE_URL", wrong)
    assert main(["stats"]) == 1  # the CLI says why, without a traceback
    err = capsys.readouterr().err
    assert err.startswith("notiflow stats: ClickHouse:") and "Authentication failed" in err
    assert "Traceback" not in err and "not-the-password" not in err


def test_analytics_flow_writes_exact_counts_over_http(
    http_client: Client, http_settings: Settings, kafka_config: dict, topic_prefix: str
) -> None:
    settings = http_settings.model_copy(
        update={
            "clickhouse_database": "server_flow",
            "kafka_bootstrap_servers": kafka_config["bootstrap.servers"],
            "topic_prefix": topic_prefix,
            "analytics_flush_seconds": 0.1,
        }
    )
    ch.migrate(http_client, "server_flow")
    ensure_topics(kafka_config, [settings.events_topic, settings.dlq_topic], PARTITIONS)
    events = e2e_workload()[:600]
    ends: Counter[int] = Counter()
    for _ in range(2):  # every event produced twice: an upstream re-emission
        produce(kafka_config, settings.events_topic, [orjson.dumps(e) for e in events], ends)
        source = BoundedSource(settings.kafka_config(), settings.events_topic, dict(ends))
        run_main(build_flow(settings, source=source, allowed_lateness=LATENESS))
        assert raw_count(http_client, "server_flow") == len(events)
        assert found(http_client, "server_flow") == expected(events)
    late = http_client.command("SELECT count() FROM server_flow.delivery_late_events FINAL")
    assert late >= 1  # the 100 s late events were merged into closed minutes over HTTP


def test_server_restart_mid_flow_loses_nothing(tmp_path: Path, ch_settings: Settings) -> None:
    """The server process stops while the flow writes and comes back 1 s later on the same
    port and data: the sink's retries ride it out, exact counts (cf. ``test_outage``)."""
    port, data_dir = free_port(), tmp_path / "server"
    with ClickHouseHttpServer(port=port, password=PASSWORD, data_dir=data_dir) as restarting:
        settings = ch_settings.model_copy(
            update={
                "clickhouse_url": restarting.url,
                "clickhouse_database": "server_outage",
                "analytics_flush_seconds": 0.05,
                "analytics_batch_size": 200,
            }
        )
        admin = ch.connect(settings)
        ch.migrate(admin, "server_outage")
        events, errors_before = outage.workload(), metrics.CLICKHOUSE_ERRORS._value.get()
        back = threading.Event()

        def items() -> Iterator[Any]:
            for index, record in enumerate(records(events)):
                if index == 200:
                    restarting.stop()
                    threading.Timer(1.0, lambda: (restarting.start(), back.set())).start()
                yield record

        run(settings, items(), batch_size=50)
        assert back.is_set()
        assert metrics.CLICKHOUSE_ERRORS._value.get() > errors_before  # writes really failed
        assert raw_count(admin, "server_outage") == len(events)
        assert outage.rounded(rollups(admin, "server_outage")) == outage.expected(events)
        admin.close()
