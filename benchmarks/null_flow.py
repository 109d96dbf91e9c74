"""The null pipeline: this machine's ceiling for a Bytewax flow over the ingest topic.

Same source as the orchestration flow (``KafkaRecordSource``, same batch size), a cheap parse
(``orjson``; bad records become a rejection item, not an exception), key by tenant/user, a
trivial stateful step (per-user id dedup) and a sink that only counts. Everything the real
flow adds on top of this is the cost of the product.

Run: ``python -m bytewax.run "benchmarks.null_flow:build_flow()"`` with the usual notiflow
environment; the count is exported on ``NOTIFLOW_METRICS_PORT`` as
``notiflow_bench_null_items_total`` plus first/last item times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from prometheus_client import Counter, Gauge

from notiflow.kafka.source import Record, SourceError
from notiflow.ops import serve_ops
from notiflow.settings import Settings, get_settings

NULL_ITEMS = Counter("notiflow_bench_null_items", "Items that reached the null sink")
NULL_FIRST = Gauge("notiflow_bench_null_first_seconds", "Epoch time of the first sunk item")
NULL_LAST = Gauge("notiflow_bench_null_last_seconds", "Epoch time of the last sunk item")

Item = tuple[str, str]  # (user key, request id or rejection source)


def parse_batch(records: list[Record | SourceError]) -> list[Item]:
    """Records → ``(tenant/user, id)``; anything unparsable → ``("rejected", source)``."""
    out: list[Item] = []
    for record in records:
        try:
            doc = orjson.loads(record.value) if isinstance(record, Record) else None
            user = doc["recipient"]["user_id"] if "recipient" in doc else doc["campaign_id"]
            out.append((f"{doc['tenant_id']}/{user}", str(doc.get("id"))))
        except Exception:  # malformed: anything can be wrong with it
            out.append(("rejected", f"{record.topic}/{record.partition}/{record.offset}"))
    return out


def dedup(seen: set[str] | None, item: Item) -> tuple[set[str], tuple[str, bool]]:
    """Per-user state: ids seen. Emits ``(id, duplicate?)``."""
    seen = seen if seen is not None else set()
    duplicate = item[1] in seen
    seen.add(item[1])
    return seen, (item[1], duplicate)


class _CountingPartition(StatelessSinkPartition[Any]):
    def __init__(self) -> None:
        self.first = True

    def write_batch(self, items: Sequence[Any]) -> None:
        now = time.time()
        if self.first:
            self.first = False
            NULL_FIRST.set(now)
        NULL_ITEMS.inc(len(items))
        NULL_LAST.set(now)


class NullSink(DynamicSink[Any]):
    """Counts items; writes nothing."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition()


def build_flow(settings: Settings | None = None) -> Dataflow:
    from notiflow.kafka.source import KafkaRecordSource

    s = settings or get_settings()
    process = int(os.environ.get("BYTEWAX_PROCESS_ID", "0"))
    serve_ops(s.metrics_host, s.metrics_port, flow="null", process=process)
    flow = Dataflow("notiflow_null")
    records = op.input(
        "requests",
        flow,
        KafkaRecordSource(s.kafka_config(), s.requests_topic, "earliest", s.source_batch_size),
    )
    parsed = op.flat_map_batch("parse", records, parse_batch)  # (user key, id)
    keyed = op.key_on("key_by_user", parsed, lambda item: item[0])
    deduped = op.stateful_map("dedup", keyed, dedup)  # (user key, (id, duplicate?))
    op.output("null_out", deduped, NullSink())
    return flow
