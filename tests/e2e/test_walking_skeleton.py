"""Acceptance for the walking skeleton: real broker → Bytewax → SMTP + webhook → ClickHouse.

1,000 requests, 20 malformed in different ways, 20 repeating an earlier id: exactly the
expected emails and webhook receipts, 20 DLQ records with reason and original bytes, 20
``deduplicated`` events, and ClickHouse counts equal to the events topic — with the flow as
one process and as two. Then the events topic is replayed into analytics twice and the
ClickHouse counts do not move.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter

import orjson
import pytest

from notiflow import clickhouse
from notiflow.engine import Engine
from notiflow.kafka.reader import TopicReader
from notiflow.messages import DLQ_HEADER_PREFIX
from notiflow.producer import produce_all
from notiflow.settings import Settings
from notiflow.workload import build_workload
from tests.e2e.helpers import wait_for_finals, wait_for_rows

TOTAL, MALFORMED, DUPLICATES = 1000, 20, 20
TIMEOUT_S = 180


def _clickhouse_counts(settings: Settings) -> Counter[str]:
    client = clickhouse.connect(settings)
    try:
        return Counter(clickhouse.count_by_status(client, settings.clickhouse_database))
    finally:
        client.close()


def _replay_analytics(env: dict[str, str], metrics_port: int, rows: int) -> None:
    """Run the analytics flow alone from the start of the events topic, then stop it."""
    child_env = {**os.environ, **env, "NOTIFLOW_METRICS_PORT": str(metrics_port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.analytics:build_flow()"],
        env=child_env,
        start_new_session=True,
    )
    try:
        assert wait_for_rows(metrics_port, rows, TIMEOUT_S) >= rows
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


@pytest.mark.e2e
@pytest.mark.parametrize("processes", [1, 2])
def test_thousand_requests_end_to_end(engine_env, smtp, hooks, processes):
    settings = Settings()
    work = build_workload(
        TOTAL,
        malformed=MALFORMED,
        duplicates=DUPLICATES,
        webhook_url=hooks.url("/hook"),
        oversized_bytes=70_000,
    )
    assert (work.unique, work.duplicates, work.malformed) == (960, 20, 20)
    metrics_port = int(engine_env["NOTIFLOW_METRICS_PORT"])
    kafka = {"bootstrap.servers": engine_env["KAFKA_BOOTSTRAP_SERVERS"]}

    with Engine(settings, processes=processes) as engine:
        produce_all(kafka, settings.requests_topic, work.records)
        events = TopicReader(kafka, settings.events_topic)
        dlq = TopicReader(kafka, settings.dlq_topic)
        expected_finals = work.emails + work.webhooks + DUPLICATES + MALFORMED
        statuses = wait_for_finals(events, expected_finals, TIMEOUT_S, engine)
        assert engine.poll() is None, engine.poll()
        assert smtp.wait_for(work.emails, 30)
        assert hooks.wait_for(work.webhooks, 30)
        assert dlq.wait_for(MALFORMED, 30)
        events.drain(quiet_s=1.5)
        dlq.drain(quiet_s=0.5)
        total_events = len(events.messages)
        assert wait_for_rows(metrics_port + processes, total_events, TIMEOUT_S) >= total_events

    # exactly once per channel asked, nothing more
    assert smtp.count == work.emails == 960
    assert hooks.count == work.webhooks
    assert all(r.signature_valid for r in hooks.received)
    assert statuses["sent"] == work.emails + work.webhooks
    assert statuses["accepted"] == 960
    assert statuses["deduplicated"] == DUPLICATES
    assert statuses["rejected"] == MALFORMED
    assert statuses["failed"] == statuses["dead_lettered"] == 0

    # every DLQ record: a readable reason, its source coordinates and the original bytes
    malformed_values = {value for key, value in work.records if key is None}
    assert len(dlq.messages) == MALFORMED
    for message in dlq.messages:
        headers = dict(message.headers())
        assert headers[f"{DLQ_HEADER_PREFIX}reason"].decode()
        assert headers[f"{DLQ_HEADER_PREFIX}source-topic"].decode() == settings.requests_topic
        assert int(headers[f"{DLQ_HEADER_PREFIX}source-offset"]) >= 0
        assert (message.value() or b"") in malformed_values
    kinds = Counter(dict(m.headers())[f"{DLQ_HEADER_PREFIX}kind"] for m in dlq.messages)
    assert {b"not_json", b"invalid", b"oversized", b"empty"} <= set(kinds)

    # ClickHouse holds exactly what the events topic holds
    topic_counts = Counter(orjson.loads(m.value())["status"] for m in events.messages)
    assert len({orjson.loads(m.value())["event_id"] for m in events.messages}) == total_events
    assert _clickhouse_counts(settings) == topic_counts

    if processes == 1:  # replaying the events topic into analytics twice changes nothing
        for _ in range(2):
            _replay_analytics(engine_env, metrics_port + 3, total_events)
            assert _clickhouse_counts(settings) == topic_counts
    events.close()
    dlq.close()
