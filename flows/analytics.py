"""The analytics dataflow: delivery events topic → ClickHouse raw events + per-minute rollups.

Run: ``python -m bytewax.run "flows.analytics:build_flow()"`` as ONE process when ClickHouse
is embedded (chDB locks its directory). Events that are not valid JSON objects go to the DLQ.

Each source batch is parsed and checked as a whole into an Arrow table
(``operators.event_table``; a batch with a bad record is decoded record by record), and every
valid event is written to ``delivery_events``. In parallel each source batch is
pre-aggregated per (minute, tenant) into figures per channel × provider × status, keyed by
tenant and folded into tumbling one-minute windows on event time (``occurred_at``) whose
watermark trails the tenant's newest event by the allowed lateness. A closed window becomes
``delivery_rollup_1m`` rows; a batch that arrives behind the watermark comes out of the late
stream and is merged into the stored rows by the writer (``notiflow.kafka.clickhouse_sink``).
Design: docs/analytics.md.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import bytewax.operators as op
import bytewax.operators.windowing as win
import orjson
import pyarrow as pa
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from notiflow import clickhouse
from notiflow.kafka.clickhouse_sink import DEFAULT_MAX_RETRY_S, ClickHouseSink, backfill_rollups
from notiflow.kafka.sink import KafkaProducerSink
from notiflow.kafka.source import KafkaRecordSource, Record, SourceError
from notiflow.messages import OutMessage, rejection_message
from notiflow.runtime import init_process
from notiflow.settings import Settings, get_settings
from operators import event_table, rollup
from operators.event_shape import event_problem
from operators.parse import KIND_INVALID, KIND_SOURCE_ERROR, Rejection

DEFAULT_ALLOWED_LATENESS_S = 30.0
WRITER_KEY = "clickhouse"  # one collect key: one writer, raw rows before the rollups they feed


def decode_event(record: Record | SourceError) -> tuple[str, dict[str, Any]] | Rejection:
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


def decode_batch(records: list[Record | SourceError]) -> list[pa.Table | Rejection]:
    """A source batch → its valid events as one table (first), then a ``Rejection`` per bad
    record. Arrow parses and checks the whole batch at once; a batch it refuses is decoded
    record by record, which names the bad ones (``decode_event``)."""
    values = [record.value or b"" for record in records if type(record) is Record]
    if len(values) == len(records):  # no source errors: Arrow may take the whole batch
        table = event_table.parse(values)
        if table is not None:
            return [table]
    events: list[dict[str, Any]] = []
    rejections: list[pa.Table | Rejection] = []
    for record in records:
        item = decode_event(record)
        if isinstance(item, Rejection):
            rejections.append(item)
        else:
            events.append(item[1])
    return [event_table.from_dicts(events), *rejections] if events else rejections


def _setting(settings: Settings, name: str, default: Any) -> Any:
    """An analytics setting, with its default where ``Settings`` does not define it yet."""
    return getattr(settings, name, default)


def build_flow(
    settings: Settings | None = None,
    *,
    source: Source[Record | SourceError] | None = None,
    dlq: Sink[OutMessage] | None = None,
    allowed_lateness: timedelta | None = None,
) -> Dataflow:
    """The analytics flow; ``source``/``dlq``/``allowed_lateness`` override the settings."""
    s = settings or get_settings()
    init_process("analytics", s)
    client = clickhouse.connect(s)  # the schema must exist before the first insert
    try:
        clickhouse.migrate(
            client,
            s.clickhouse_database,
            events_ttl_days=_setting(s, "analytics_retention_days", None),
            rollups_ttl_days=_setting(s, "analytics_rollup_retention_days", None),
        )
        backfill_rollups(client, s.clickhouse_database)  # windows a previous run left open
    finally:
        client.close()
    if allowed_lateness is None:
        seconds = _setting(s, "analytics_allowed_lateness_seconds", DEFAULT_ALLOWED_LATENESS_S)
        allowed_lateness = timedelta(seconds=seconds)
    flow = Dataflow("notiflow_analytics")

    records = op.input(
        "events",
        flow,
        # polls of a few thousand: parsed as one table each, yet small enough to interleave
        # the partitions finely in event time, so a backlog replay stays within the allowed
        # lateness instead of making whole batches late
        source
        or KafkaRecordSource(
            s.kafka_config(), s.events_topic, "earliest", s.analytics_source_batch_size
        ),
    )  # Record | SourceError
    decoded = op.flat_map_batch("decode", records, decode_batch)  # event table | Rejection
    split = op.branch("split_invalid", decoded, lambda item: isinstance(item, pa.Table))
    events = split.trues  # one table of events per source batch
    partials = op.flat_map("pre_aggregate", events, rollup.stage)
    # Partial: one per (minute, tenant) per source batch, figures per dims
    windows = win.fold_window(
        "rollup_1m",
        op.key_on("key_tenant", partials, rollup.partial_key),
        win.EventClock(rollup.partial_time, wait_for_system_duration=allowed_lateness),
        win.TumblingWindower(length=rollup.WINDOW, align_to=rollup.EPOCH),
        dict,
        rollup.fold,
        rollup.merge,
        ordered=False,
    )  # down: (tenant, (window id, {Dims: Aggregate})); late: (tenant, (window id, Partial))
    closed = op.flat_map("closed_rows", windows.down, lambda kv: rollup.closed_rows(*kv[1]))
    late = op.map("late_partials", windows.late, lambda kv: kv[1][1])  # Partial
    writes = op.merge("writes", events, closed, late)  # event table | RollupRow | Partial
    batches = op.collect(
        "batch",
        op.key_on("one_writer", writes, lambda _: WRITER_KEY),
        timeout=timedelta(seconds=s.analytics_flush_seconds),
        # items are mostly event tables of up to analytics_source_batch_size events each
        max_size=max(1, s.analytics_batch_size // s.analytics_source_batch_size),
    )  # (WRITER_KEY, [write, ...])
    op.output(
        "clickhouse_out",
        op.map("drop_key", batches, lambda kv: kv[1]),
        ClickHouseSink(s, _setting(s, "analytics_max_retry_seconds", DEFAULT_MAX_RETRY_S)),
    )
    op.output(
        "dlq_out",
        op.map("encode_rejections", split.falses, rejection_message),
        dlq or KafkaProducerSink(s.kafka_config(), s.dlq_topic, s.producer_linger_ms),
    )
    return flow
