"""ClickHouse becomes unavailable mid-run and nothing is lost or counted twice.

The outage is real, not a mock: the flow's tables are DETACHed from the running embedded
engine (every insert and lookup then fails with UNKNOWN_TABLE, as the server would answer)
and ATTACHed again later, while the real flow runs. A short outage is ridden out by the
sink's retries; a long one stops the flow, which resumes from its recovery snapshot.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from notiflow import metrics
from notiflow.settings import Settings
from tests.analytics.flowrun import event, raw_count, records, rollups, run

TABLES = ("delivery_events", "delivery_rollup_1m", "delivery_late_events")
CHANNELS = (("email", "smtp"), ("sms", "twilio"), ("push", "fcm"))
TOTAL = 600


def workload() -> list[dict[str, Any]]:
    """TOTAL events in time order over three minutes and three channels."""
    events = []
    for n in range(TOTAL):
        channel, provider = CHANNELS[n % 3]
        status = "failed" if n % 10 == 0 else "sent"
        events.append(
            event(n, n * 0.3, channel=channel, provider=provider, status=status, cost_usd=0.01)
        )
    return events


def expected(events: list[dict[str, Any]]) -> dict[tuple[str, ...], tuple[Any, ...]]:
    """The rollups, counted in Python."""
    figures: dict[tuple[str, ...], list[Any]] = defaultdict(lambda: [0, 0, 0.0, 0.0, 0.0, 0])
    for e in events:
        key = (e["occurred_at"][11:16], e["tenant_id"], e["channel"], e["provider"], e["status"])
        row = figures[key]
        row[0] += 1
        row[1] += 1
        row[2] += e["latency_ms"]
        row[3] = max(row[3], e["latency_ms"])
        row[4] += e["cost_usd"]
    return {key: (*row[:4], round(row[4], 6), row[5]) for key, row in figures.items()}


def rounded(found: dict[tuple[str, ...], tuple[Any, ...]]) -> dict[tuple[str, ...], tuple]:
    return {key: (*row[:4], round(row[4], 6), row[5]) for key, row in found.items()}


class Outage:
    """Detaches the flow's tables when the source reaches ``at``; re-attaches after ``s``."""

    def __init__(self, client: Client, database: str, at: int, seconds: float) -> None:
        self.client, self.database, self.at, self.seconds = client, database, at, seconds
        self.over = threading.Event()

    def items(self, events: list[dict[str, Any]]) -> Iterator[Any]:
        for index, record in enumerate(records(events)):
            if index == self.at:
                for table in TABLES:
                    self.client.command(f"DETACH TABLE {self.database}.{table}")
                threading.Timer(self.seconds, self.end).start()
            yield record

    def end(self) -> None:
        for table in TABLES:
            self.client.command(f"ATTACH TABLE {self.database}.{table}")
        self.over.set()


@pytest.fixture
def settings(db_settings: Settings) -> Settings:
    return db_settings.model_copy(
        update={"analytics_flush_seconds": 0.05, "analytics_batch_size": 200}
    )


def test_short_outage_is_ridden_out_by_retries(
    client: Client, database: str, settings: Settings
) -> None:
    events = workload()
    errors_before = metrics.CLICKHOUSE_ERRORS._value.get()
    outage = Outage(client, database, at=200, seconds=1.0)
    run(settings, outage.items(events), batch_size=50)
    assert outage.over.is_set()
    assert metrics.CLICKHOUSE_ERRORS._value.get() > errors_before  # writes really failed
    assert raw_count(client, database) == TOTAL
    assert rounded(rollups(client, database)) == expected(events)


def test_long_outage_stops_the_flow_which_resumes_without_loss(
    client: Client,
    database: str,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings.model_copy(update={"analytics_max_retry_seconds": 0.5})  # give up fast
    events = workload()
    outage = Outage(client, database, at=200, seconds=1.5)
    with pytest.raises(Exception, match="error writing output batch") as stopped:
        run(settings, outage.items(events), batch_size=50, recovery=tmp_path / "recovery")
    assert outage.over.wait(10)
    assert "UNKNOWN_TABLE" in repr(stopped.value.__cause__)  # the sink gave up on ClickHouse
    stored = raw_count(client, database)
    assert 0 < stored < TOTAL  # stopped mid-run
    run(settings, records(events), batch_size=50, recovery=tmp_path / "recovery")  # restart
    assert raw_count(client, database) == TOTAL
    assert rounded(rollups(client, database)) == expected(events)
