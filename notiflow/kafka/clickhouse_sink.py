"""``ClickHouseSink``: the analytics flow's one writer of raw events, rollup rows and late events.

Each item is a list (``op.collect`` on a single key, so one partition writes everything in
arrival order) mixing three kinds of write, applied by :class:`AnalyticsWriter`:

- an Arrow table of events (one per source batch; see ``operators.event_table``), event
  dicts or lists of them → ``delivery_events``. A replayed
  event has the same ``event_id`` and the ReplacingMergeTree keeps it once.
- a :class:`~operators.rollup.RollupRow`, a window closed in the flow → ``delivery_rollup_1m``.
  The flow's figures are stored as they are the first time a (window, dims) key is written.
  When the key was written before (a late event was merged into it, a replay, a resumed
  run, a window re-opened after Bytewax dropped the key's state), the row is recomputed in
  full from the deduplicated raw table instead.
- a late :class:`~operators.rollup.Partial` → its events are inserted into
  ``delivery_events`` (again, harmlessly: so they are there before the recompute), recorded
  in ``delivery_late_events`` and their key recomputed.

Every write replaces and never adds (ReplacingMergeTree with an increasing version), so a
batch can be written twice; that is what makes retries and replays safe.

A failed batch is retried whole with backoff for up to ``max_retry_s`` while the flow waits
(Kafka holds the backlog). Then the sink raises: the process exits, and on restart resumes
from its last recovery snapshot, or re-reads the topic without one. Nothing is lost and
nothing is counted twice. Embedded chDB allows one process per data directory: run this
flow as one process.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from string import Template
from typing import Any

import pyarrow as pa
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client

from notiflow import clickhouse, metrics
from notiflow.settings import Settings
from operators.event_table import concat
from operators.rollup import WINDOW, Dims, Partial, RollupRow, dims_of

logger = logging.getLogger(__name__)

RETRY_BASE_S = 0.5
RETRY_MAX_S = 10.0
DEFAULT_MAX_RETRY_S = 120.0
DATA_ERRORS = (pa.ArrowException, TypeError, KeyError)
#: Windows whose written keys are remembered (saves a lookup); two days of minutes.
KNOWN_WINDOWS = 2 * 24 * 60

Write = pa.Table | list[dict[str, Any]] | dict[str, Any] | RollupRow | Partial
Key = tuple[datetime, Dims]
_KEYS = "{keys:Array(Tuple(DateTime('UTC'), String, String, String, String))}"
_KEY_NAMES = "window_start tenant_id channel provider status"
_ROLLUP_COLUMNS = (
    f"{_KEY_NAMES} events latency_events latency_sum_ms latency_max_ms cost_usd".split()
)
_ROLLUP_COLUMNS += ["late_events", "computed_by", "version"]
_LATE_COLUMNS = f"{_KEY_NAMES} event_id occurred_at detected_at".split()
# $db, $keys and $columns are filled in once; {name:Type} are bound parameters.
# occurred_at is compared with DateTime64 parameters: against a DateTime constant the minmax
# index of ClickHouse 26.9 rounds a granule's max (…:59.800 → next minute) and skips it.
_EXISTING_SQL = Template("""
SELECT DISTINCT window_start, tenant_id, channel, provider, status
FROM $db.delivery_rollup_1m
WHERE window_start IN {windows:Array(DateTime('UTC'))}
  AND (window_start, tenant_id, channel, provider, status) IN $keys
""")
# Every requested key gets a row, zero when the raw table no longer has its events.
_RECOMPUTE_SQL = Template("""
INSERT INTO $db.delivery_rollup_1m ($columns)
SELECT wanted.window_start, wanted.tenant_id, wanted.channel, wanted.provider, wanted.status,
       raw.events, raw.latency_events, raw.latency_sum_ms, raw.latency_max_ms, raw.cost_usd,
       late.late_events, 'raw', {version:UInt64}
FROM (
    SELECT k.1 AS window_start, k.2 AS tenant_id, k.3 AS channel, k.4 AS provider,
           k.5 AS status
    FROM (SELECT arrayJoin($keys) AS k)
) AS wanted
LEFT JOIN (
    SELECT toStartOfMinute(occurred_at) AS window_start, tenant_id, channel, provider, status,
           count() AS events, count(latency_ms) AS latency_events,
           sum(ifNull(latency_ms, 0)) AS latency_sum_ms,
           max(ifNull(latency_ms, 0)) AS latency_max_ms,
           sum(ifNull(cost_usd, 0)) AS cost_usd
    FROM $db.delivery_events FINAL
    WHERE occurred_at >= {start:DateTime64(3, 'UTC')} AND occurred_at < {end:DateTime64(3, 'UTC')}
      AND (toStartOfMinute(occurred_at), tenant_id, channel, provider, status) IN $keys
    GROUP BY window_start, tenant_id, channel, provider, status
) AS raw USING (window_start, tenant_id, channel, provider, status)
LEFT JOIN (
    SELECT window_start, tenant_id, channel, provider, status, count() AS late_events
    FROM $db.delivery_late_events FINAL
    WHERE (window_start, tenant_id, channel, provider, status) IN $keys
    GROUP BY window_start, tenant_id, channel, provider, status
) AS late USING (window_start, tenant_id, channel, provider, status)
""")


# Keys with raw events but no rollup row, since a time (see backfill_rollups).
_GAPS_SQL = Template("""
SELECT DISTINCT toStartOfMinute(occurred_at) AS window_start, tenant_id, channel, provider,
       status
FROM $db.delivery_events
WHERE occurred_at >= {since:DateTime64(3, 'UTC')}
  AND (window_start, tenant_id, channel, provider, status) NOT IN (
      SELECT window_start, tenant_id, channel, provider, status
      FROM $db.delivery_rollup_1m
      WHERE window_start >= toStartOfMinute({since:DateTime64(3, 'UTC')}))
ORDER BY window_start
""")
#: Open windows at a stop trail the newest closed one by about a minute plus the lateness.
BACKFILL_HORIZON = timedelta(hours=1)
BACKFILL_CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class Written:
    """What one :meth:`AnalyticsWriter.write` did."""

    events: int
    flow_rows: int
    recomputed: int
    late_events: int


def _key_params(keys: Sequence[Key]) -> list[tuple[Any, ...]]:
    return [(window, *dims) for window, dims in sorted(keys)]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class AnalyticsWriter:
    """Applies batches of mixed writes to one database (see the module docstring)."""

    def __init__(
        self, client: Client, database: str, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self._client = client
        self._database = database
        names = {"db": quote_identifier(database), "keys": _KEYS}
        self._existing_sql = _EXISTING_SQL.substitute(names)
        self._recompute_sql = _RECOMPUTE_SQL.substitute(names, columns=", ".join(_ROLLUP_COLUMNS))
        self._clock = clock
        self._version = 0
        self._known: dict[datetime, set[Dims]] = {}

    def write(self, items: Sequence[Write]) -> Written:
        """Write a batch; idempotent, so a failed batch is retried whole. May block."""
        tables: list[pa.Table] = []
        events: list[dict[str, Any]] = []
        rows: list[RollupRow] = []
        late: list[Partial] = []
        for item in items:
            if isinstance(item, pa.Table):
                tables.append(item)
            elif isinstance(item, list):
                events.extend(item)
            elif isinstance(item, dict):
                events.append(item)
            elif isinstance(item, RollupRow):
                rows.append(item)
            elif isinstance(item, Partial):
                late.append(item)
            else:
                raise TypeError(f"not an analytics write: {type(item).__name__}")
        if events:
            tables.append(clickhouse.events_to_arrow(events))
        late_tables = [partial.events for partial in late]  # each selected once
        late_events = sum(table.num_rows for table in late_tables)
        raw = [table for table in tables + late_tables if table.num_rows]
        inserted = 0
        if raw:
            inserted = clickhouse.insert_events(self._client, self._database, concat(raw))
        dirty: set[Key] = {(p.window_start, dims) for p in late for dims in p.groups}
        if late:
            self._insert_late(list(zip(late, late_tables, strict=True)))
        fresh: list[RollupRow] = []
        if rows:
            keys = Tally((row.window_start, row.dims) for row in rows)
            repeated = {key for key, count in keys.items() if count > 1}
            existing = self._existing(set(keys)) | repeated | dirty
            fresh = [row for row in rows if (row.window_start, row.dims) not in existing]
            dirty.update(key for key in keys if key in existing)
            self._insert_rows(fresh)
        if dirty:
            self.recompute(dirty)
        return Written(inserted - late_events, len(fresh), len(dirty), late_events)

    def _next_version(self) -> int:
        self._version = max(self._clock(), self._version + 1)
        return self._version

    def _remember(self, keys: Sequence[Key]) -> None:
        for window, dims in keys:
            self._known.setdefault(window, set()).add(dims)
        while len(self._known) > KNOWN_WINDOWS:
            del self._known[min(self._known)]

    def _existing(self, keys: set[Key]) -> set[Key]:
        """Keys that already have a row: remembered, else looked up."""
        known = {key for key in keys if key[1] in self._known.get(key[0], ())}
        unknown = keys - known
        if not unknown:
            return known
        result = self._client.query(
            self._existing_sql,
            parameters={
                "windows": sorted({window for window, _ in unknown}),
                "keys": _key_params(list(unknown)),
            },
        )
        found = {(_aware(row[0]), Dims(*row[1:])) for row in result.result_rows}
        self._remember(list(found))
        return known | found

    def _insert_rows(self, rows: Sequence[RollupRow]) -> None:
        if not rows:
            return
        version = self._next_version()
        data = [[row.window_start, *row.dims, *row.aggregate, 0, "flow", version] for row in rows]
        self._client.insert(
            clickhouse.ROLLUP_TABLE, data, column_names=_ROLLUP_COLUMNS, database=self._database
        )
        self._remember([(row.window_start, row.dims) for row in rows])

    def _insert_late(self, late: Sequence[tuple[Partial, pa.Table]]) -> None:
        detected = datetime.now(UTC)
        data = [
            [
                partial.window_start,
                *dims_of(event),
                event["event_id"],
                event["occurred_at"],
                detected,
            ]
            for partial, events in late
            for event in events.to_pylist()
        ]
        self._client.insert(
            clickhouse.LATE_TABLE, data, column_names=_LATE_COLUMNS, database=self._database
        )

    def recompute(self, keys: set[Key]) -> None:
        """Replace the rows of ``keys`` by their aggregate over the raw table (FINAL)."""
        windows = [window for window, _ in keys]
        self._client.command(
            self._recompute_sql,
            parameters={
                "keys": _key_params(list(keys)),
                "start": min(windows),
                "end": max(windows) + WINDOW,
                "version": self._next_version(),
            },
        )
        self._remember(list(keys))


def backfill_rollups(client: Client, database: str) -> int:
    """Recompute from raw the rollup rows missing for events already stored; return how many.

    Run at flow start-up, before any window opens. It covers windows that have events but
    no row: open when a previous run stopped (without recovery, with a topic that can no
    longer be re-read, like the in-memory dev broker) or stored before the rollups existed.
    Looks back from an hour before the newest row, or everything when there is none. A row
    written here is replaced by a recompute if the flow later closes the same window.
    """
    db = quote_identifier(database)
    newest = client.query(f"SELECT max(window_start) FROM {db}.delivery_rollup_1m").result_rows
    since = datetime.fromtimestamp(0, UTC)
    if newest[0][0].year > 1970:  # max() of no rows is the epoch
        since = _aware(newest[0][0]) - BACKFILL_HORIZON
    rows = client.query(_GAPS_SQL.substitute(db=db), parameters={"since": since}).result_rows
    writer = AnalyticsWriter(client, database)
    keys = [(_aware(row[0]), Dims(*row[1:])) for row in rows]  # by time: narrow recomputes
    for start in range(0, len(keys), BACKFILL_CHUNK):
        writer.recompute(set(keys[start : start + BACKFILL_CHUNK]))
    if keys:
        logger.info("rollups backfilled from raw events", extra={"rows": len(keys)})
    return len(keys)


class _WriterPartition(StatelessSinkPartition[list[Write]]):
    def __init__(self, settings: Settings, max_retry_s: float) -> None:
        self._client = clickhouse.connect(settings)
        self._writer = AnalyticsWriter(self._client, settings.clickhouse_database)
        self._max_retry_s = max_retry_s

    def write_batch(self, items: Sequence[list[Write]]) -> None:
        writes = [write for batch in items for write in batch]
        if not writes:
            return
        started = time.monotonic()
        delay = RETRY_BASE_S
        while True:
            try:
                written = self._writer.write(writes)
            except DATA_ERRORS:
                self.close()
                raise  # a bug, not an outage: events are shape-checked before this sink
            except Exception as error:
                metrics.CLICKHOUSE_ERRORS.inc()
                if time.monotonic() - started > self._max_retry_s:
                    logger.error("clickhouse unavailable; stopping", extra={"error": str(error)})
                    self.close()
                    raise
                logger.warning(
                    "clickhouse write failed; retrying",
                    extra={"items": len(writes), "error": str(error), "delay_s": delay},
                )
                time.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
                continue
            metrics.CLICKHOUSE_ROWS.inc(written.events)
            metrics.ANALYTICS_LATE_EVENTS.inc(written.late_events)
            return

    def close(self) -> None:
        self._client.close()  # idempotent; an open chDB handle keeps the engine locked


class ClickHouseSink(DynamicSink[list[Write]]):
    """Write analytics batches; at-least-once delivery, idempotent tables (exact counts)."""

    def __init__(self, settings: Settings, max_retry_s: float = DEFAULT_MAX_RETRY_S) -> None:
        self._settings = settings
        self._max_retry_s = max_retry_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WriterPartition:
        return _WriterPartition(self._settings, self._max_retry_s)
