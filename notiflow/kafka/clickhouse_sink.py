"""``ClickHouseSink``: a Bytewax output inserting batches of event dicts into ClickHouse.

Each item is a list of events (from ``op.collect``). An insert that fails is retried with
backoff for up to ``max_retry_s``; after that the sink raises, the flow stops, and on restart
it resumes from the Kafka offsets of its last recovery snapshot: events are re-read, never
lost, and the ReplacingMergeTree table counts each ``event_id`` once.

Embedded chDB allows one process per data directory, so run this flow as one process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import pyarrow as pa
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from notiflow import clickhouse, metrics
from notiflow.settings import Settings

logger = logging.getLogger(__name__)

RETRY_BASE_S = 0.5
RETRY_MAX_S = 10.0
DATA_ERRORS = (pa.ArrowException, TypeError, KeyError)


class _InsertPartition(StatelessSinkPartition[list[dict]]):
    def __init__(self, settings: Settings, max_retry_s: float) -> None:
        self._database = settings.clickhouse_database
        self._client = clickhouse.connect(settings)
        self._max_retry_s = max_retry_s

    def write_batch(self, items: Sequence[list[dict]]) -> None:
        rows = [event for batch in items for event in batch]
        if not rows:
            return
        started = time.monotonic()
        delay = RETRY_BASE_S
        while True:
            try:
                clickhouse.insert_events(self._client, self._database, rows)
                metrics.CLICKHOUSE_ROWS.inc(len(rows))
                return
            except DATA_ERRORS:
                raise  # a bug, not an outage: events are shape-checked before this sink
            except Exception as error:
                metrics.CLICKHOUSE_ERRORS.inc()
                if time.monotonic() - started > self._max_retry_s:
                    raise
                logger.warning(
                    "clickhouse insert failed; retrying",
                    extra={"rows": len(rows), "error": str(error), "delay_s": delay},
                )
                time.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    def close(self) -> None:
        self._client.close()


class ClickHouseSink(DynamicSink[list[dict]]):
    """Insert event batches; at-least-once, idempotent by ``event_id`` in the table."""

    def __init__(self, settings: Settings, max_retry_s: float = 120.0) -> None:
        self._settings = settings
        self._max_retry_s = max_retry_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _InsertPartition:
        return _InsertPartition(self._settings, self._max_retry_s)
