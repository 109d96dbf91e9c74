"""Through the real broker: events produced to the topic, the analytics flow reads them to
the end (in-process), and ClickHouse holds exact raw rows and rollups; malformed records go
to the real DLQ topic. The topic is then replayed with every event produced a second time
(an upstream re-emission) and the counts do not move.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import orjson
from bytewax.inputs import StatefulSourcePartition
from bytewax.testing import run_main
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from flows.analytics import build_flow
from notiflow.kafka.admin import ensure_topics
from notiflow.kafka.reader import TopicReader
from notiflow.kafka.source import KafkaRecordSource, Record, SourceError
from notiflow.settings import Settings
from tests.analytics.flowrun import LATENESS, event, raw_count, rollups

TOTAL, PARTITIONS, MALFORMED = 3000, 2, 3


class _UntilOffset(StatefulSourcePartition[Record | SourceError, int]):
    """A partition reader that ends (EOF) once it has read up to ``end``."""

    def __init__(self, inner: StatefulSourcePartition, end: int) -> None:
        self._inner, self._end = inner, end

    def next_batch(self) -> list[Record | SourceError]:
        if self._inner.snapshot() >= self._end:
            raise StopIteration
        return self._inner.next_batch()

    def next_awake(self) -> Any:
        return self._inner.next_awake()

    def snapshot(self) -> int:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class BoundedSource(KafkaRecordSource):
    """The flow's Kafka source, stopping at known end offsets (a backfill run)."""

    def __init__(self, config: dict, topic: str, ends: dict[int, int]) -> None:
        super().__init__(config, topic, "earliest", 500)
        self._ends = ends

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        inner = super().build_part(step_id, for_part, resume_state)
        return _UntilOffset(inner, self._ends[int(for_part)])


def workload() -> list[dict[str, Any]]:
    """Events over four minutes, two tenants, three channels; every 50th is 100 s late."""
    rng = random.Random(5)
    events = []
    for n in range(TOTAL):
        seconds = n * 0.08 - (100 if n % 50 == 49 else 0) + 100
        channel, provider = rng.choice([("email", "smtp"), ("sms", "twilio"), ("push", "fcm")])
        events.append(
            event(
                n,
                seconds,
                tenant_id=rng.choice(["acme", "globex"]),
                channel=channel,
                provider=provider,
                status=rng.choice(["sent", "sent", "delivered", "failed"]),
                cost_usd=rng.choice([None, 0.004]),
            )
        )
    return events


def produce(config: dict, topic: str, values: list[bytes], ends: Counter[int]) -> None:
    producer = Producer({**config, "enable.idempotence": True, "linger.ms": 5})
    for index, value in enumerate(values):
        partition = index % PARTITIONS
        producer.produce(topic, value=value, partition=partition)
        ends[partition] += 1
        producer.poll(0)
    assert producer.flush(30) == 0


def expected(events: list[dict[str, Any]]) -> dict[tuple[str, ...], tuple[Any, ...]]:
    figures: dict[tuple[str, ...], list[Any]] = defaultdict(lambda: [0, 0, 0.0, 0.0, 0.0])
    for e in events:
        key = (e["occurred_at"][11:16], e["tenant_id"], e["channel"], e["provider"], e["status"])
        row = figures[key]
        row[0] += 1
        row[1] += 1
        row[2] += e["latency_ms"]
        row[3] = max(row[3], e["latency_ms"])
        row[4] += e["cost_usd"] or 0.0
    return {key: (*row[:4], round(row[4], 6)) for key, row in figures.items()}


def found(client: Client, database: str) -> dict[tuple[str, ...], tuple[Any, ...]]:
    return {k: (*v[:4], round(v[4], 6)) for k, v in rollups(client, database).items()}


def test_topic_to_clickhouse_exact_then_replayed(
    client: Client, db_settings: Settings, kafka_config: dict, topic_prefix: str
) -> None:
    settings = db_settings.model_copy(
        update={
            "kafka_bootstrap_servers": kafka_config["bootstrap.servers"],
            "topic_prefix": topic_prefix,
            "analytics_flush_seconds": 0.1,
        }
    )
    database = settings.clickhouse_database
    ensure_topics(kafka_config, [settings.events_topic, settings.dlq_topic], PARTITIONS)
    events = workload()
    values = [orjson.dumps(e) for e in events]
    values[10:10] = [b"", b"[1, 2]", b'{"event_id": ""}']  # malformed: to the DLQ
    ends: Counter[int] = Counter()
    produce(kafka_config, settings.events_topic, values, ends)

    def run_to_end() -> None:
        source = BoundedSource(settings.kafka_config(), settings.events_topic, dict(ends))
        run_main(build_flow(settings, source=source, allowed_lateness=LATENESS))

    run_to_end()
    assert raw_count(client, database) == TOTAL
    assert found(client, database) == expected(events)
    late = client.command(f"SELECT count() FROM {database}.delivery_late_events FINAL")
    assert late >= 1  # the 100 s late events were caught and merged, not lost
    total_late = client.command(f"SELECT sum(late_events) FROM {database}.delivery_rollup_1m FINAL")
    assert total_late == late
    dlq = TopicReader(kafka_config, settings.dlq_topic)
    assert dlq.wait_for(MALFORMED, 20)
    dlq.close()

    produce(kafka_config, settings.events_topic, values, ends)  # every event a second time
    run_to_end()  # fresh flow state, reads the whole topic again
    assert raw_count(client, database) == TOTAL
    assert found(client, database) == expected(events)
