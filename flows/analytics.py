"""The analytics dataflow: delivery events topic → ClickHouse ``delivery_events``.

Run: ``python -m bytewax.run "flows.analytics:build_flow()"`` as ONE process when ClickHouse
is embedded (chDB locks its directory). Events that are not valid JSON objects go to the DLQ.
"""

from __future__ import annotations

from datetime import timedelta

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow

from notiflow import clickhouse
from notiflow.kafka.clickhouse_sink import ClickHouseSink
from notiflow.kafka.sink import KafkaProducerSink
from notiflow.kafka.source import KafkaRecordSource, Record, SourceError
from notiflow.messages import rejection_message
from notiflow.runtime import init_process
from notiflow.settings import Settings, get_settings
from operators.event_shape import event_problem
from operators.parse import KIND_INVALID, KIND_SOURCE_ERROR, Rejection


def decode_event(record: Record | SourceError) -> tuple[str, dict] | Rejection:
    """Record → (partition key, event dict), or a ``Rejection`` for the DLQ."""
    source = f"{record.topic}/{record.partition}/{record.offset}"
    if isinstance(record, SourceError):
        return Rejection(KIND_SOURCE_ERROR, record.reason, source, 0, None, None, ())
    try:
        event = orjson.loads(record.value or b"")
        problem = event_problem(event)
    except orjson.JSONDecodeError as error:
        problem = f"event is not JSON: {error}"
    if problem is None:
        return str(record.partition), event
    return Rejection(
        KIND_INVALID, problem, source, record.timestamp_ms, record.value, record.key, record.headers
    )


def build_flow(settings: Settings | None = None) -> Dataflow:
    s = settings or get_settings()
    init_process("analytics", s)
    kafka = s.kafka_config()
    client = clickhouse.connect(s)  # the schema must exist before the first insert
    try:
        clickhouse.migrate(client, s.clickhouse_database)
    finally:
        client.close()
    flow = Dataflow("notiflow_analytics")

    records = op.input(
        "events",
        flow,
        KafkaRecordSource(kafka, s.events_topic, "earliest", s.analytics_batch_size),
    )  # Record | SourceError
    decoded = op.map("decode", records, decode_event)
    # (partition, event dict) | Rejection
    split = op.branch(
        "split_invalid",
        decoded,
        lambda item: isinstance(item, tuple) and not isinstance(item, Rejection),
    )
    batches = op.collect(
        "batch",
        split.trues,
        timeout=timedelta(seconds=s.analytics_flush_seconds),
        max_size=s.analytics_batch_size,
    )  # (partition, [event dict, ...])
    op.output("clickhouse_out", op.map("drop_key", batches, lambda kv: kv[1]), ClickHouseSink(s))
    op.output(
        "dlq_out",
        op.map("encode_rejections", split.falses, rejection_message),
        KafkaProducerSink(kafka, s.dlq_topic, s.producer_linger_ms),
    )
    return flow
