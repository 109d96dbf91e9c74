"""Per-minute delivery rollups: the pure aggregation behind the analytics flow's windowing.

Rows are per minute × tenant × channel × provider × status (:class:`Dims`). The flow does
not push every event through Bytewax windowing: :func:`stage` pre-aggregates each source
batch into one :class:`Partial` per (minute, tenant) holding an :class:`Aggregate` per dims.
Partials are keyed by tenant and folded (:func:`fold`) into tumbling one-minute event-time
windows, so window work is per tenant and batch, not per event, and each tenant's whole
traffic drives its watermark. A partial's time is its latest ``occurred_at``
(:func:`partial_time`): it advances the watermark and decides lateness for the partial.

When a window closes, :func:`closed_rows` turns its state into :class:`RollupRow` s. A
partial that arrives behind the watermark comes out of the late stream with its events, so
the writer can record them and merge them into the stored rows (see
``notiflow.kafka.clickhouse_sink``). No state is kept here; times are timezone-aware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from operators.event_table import STORED_TIME

WINDOW = timedelta(minutes=1)
#: Windows are aligned to the Unix epoch, so they start on whole minutes (UTC).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WINDOW_S = int(WINDOW.total_seconds())


class Dims(NamedTuple):
    """The grouping of a rollup row; absent channel/provider are ``''`` as in ClickHouse."""

    tenant_id: str
    channel: str
    provider: str
    status: str


class Aggregate(NamedTuple):
    """Additive figures of a group of events (latency/cost only where present)."""

    events: int = 0
    latency_events: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    cost_usd: float = 0.0

    def merge(self, other: Aggregate) -> Aggregate:
        """The aggregate of both groups."""
        return Aggregate(
            self.events + other.events,
            self.latency_events + other.latency_events,
            self.latency_sum_ms + other.latency_sum_ms,
            max(self.latency_max_ms, other.latency_max_ms),
            self.cost_usd + other.cost_usd,
        )


Groups = dict[Dims, Aggregate]


@dataclass(frozen=True, slots=True)
class Partial:
    """One source batch's events of one tenant in one window, pre-aggregated per dims.

    :attr:`events` (its rows of the batch) are only read on the late path, so a partial
    keeps a reference to the whole batch table and selects its rows when asked; pickled,
    it carries just its own rows.
    """

    window_start: datetime
    tenant_id: str
    groups: Groups
    max_occurred_at: datetime
    batch: pa.Table = field(compare=False, repr=False)

    @property
    def events(self) -> pa.Table:
        """This partial's events (columns of ``operators.event_table``)."""
        occurred = self.batch.column("occurred_at")
        mask = pc.and_(
            pc.equal(self.batch.column("tenant_id"), self.tenant_id),
            pc.and_(
                pc.greater_equal(occurred, pa.scalar(self.window_start, STORED_TIME)),
                pc.less(occurred, pa.scalar(self.window_start + WINDOW, STORED_TIME)),
            ),
        )
        return self.batch.filter(mask)

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.window_start, self.tenant_id, self.groups, self.max_occurred_at)
        return (Partial, (*fields, self.events))


class RollupRow(NamedTuple):
    """A closed window's figures for one dims group, as computed in the flow."""

    window_start: datetime
    dims: Dims
    aggregate: Aggregate


def window_start(moment: datetime) -> datetime:
    """Start of the one-minute window holding ``moment`` (aware, UTC)."""
    seconds = int(moment.timestamp() // _WINDOW_S) * _WINDOW_S
    return datetime.fromtimestamp(seconds, UTC)


def dims_of(event: dict[str, Any]) -> Dims:
    """The rollup dims of a wire event."""
    return Dims(
        event["tenant_id"], event.get("channel") or "", event.get("provider") or "", event["status"]
    )


_GROUP_BY = ["minute", "tenant_id", "channel", "provider", "status"]
_AGGREGATES = [
    ([], "count_all"),
    ("latency_ms", "count"),
    ("latency_ms", "sum"),
    ("latency_ms", "max"),
    ("cost_usd", "sum"),
    ("occurred_ms", "max"),
]


def stage(events: pa.Table) -> list[Partial]:
    """Pre-aggregate a batch of checked events (``operators.event_table``): one partial per
    (window, tenant), earliest window first (so a batch never makes its own events late).
    Vectorised: the per-event work is Arrow's, in C++."""
    if events.num_rows == 0:
        return []
    occurred = events.column("occurred_at")
    millis = pc.cast(occurred, pa.int64())
    keys = pa.table(
        {
            "minute": pc.floor(pc.divide(pc.cast(millis, pa.float64()), _WINDOW_S * 1000.0)),
            "tenant_id": events.column("tenant_id"),
            "channel": pc.fill_null(events.column("channel"), ""),
            "provider": pc.fill_null(events.column("provider"), ""),
            "status": events.column("status"),
            "latency_ms": events.column("latency_ms"),
            "cost_usd": events.column("cost_usd"),
            "occurred_ms": millis,
        }
    )
    cells = keys.group_by(_GROUP_BY, use_threads=False).aggregate(_AGGREGATES).to_pydict()
    partials: dict[tuple[int, str], list[Any]] = {}
    columns = (cells[name] for name in _CELL_COLUMNS)
    for minute, tenant, channel, provider, status, n, lat_n, lat_sum, lat_max, cost, latest in zip(
        *columns, strict=True
    ):
        partial = partials.setdefault((int(minute), tenant), [{}, latest])
        partial[0][Dims(tenant, channel, provider, status)] = Aggregate(
            n, lat_n, float(lat_sum or 0.0), float(lat_max or 0.0), float(cost or 0.0)
        )
        if latest > partial[1]:
            partial[1] = latest
    return [
        Partial(
            datetime.fromtimestamp(minute * _WINDOW_S, UTC),
            tenant,
            groups,
            EPOCH + timedelta(milliseconds=latest),
            events,
        )
        for (minute, tenant), (groups, latest) in sorted(partials.items())
    ]


_CELL_COLUMNS = (
    *_GROUP_BY,
    "count_all",
    "latency_ms_count",
    "latency_ms_sum",
    "latency_ms_max",
    "cost_usd_sum",
    "occurred_ms_max",
)


def partial_key(partial: Partial) -> str:
    """The windowing key: the tenant."""
    return partial.tenant_id


def partial_time(partial: Partial) -> datetime:
    """Event time of a partial for the windowing clock: its latest ``occurred_at``."""
    return partial.max_occurred_at


def fold(groups: Groups, partial: Partial) -> Groups:
    """Add a partial to a window's per-dims aggregates (updated in place and returned)."""
    for dims, aggregate in partial.groups.items():
        current = groups.get(dims)
        groups[dims] = aggregate if current is None else current.merge(aggregate)
    return groups


def merge(left: Groups, right: Groups) -> Groups:
    """Combine two states of one window (tumbling windows never merge; for the API)."""
    merged = dict(left)
    for dims, aggregate in right.items():
        merged[dims] = aggregate if dims not in merged else merged[dims].merge(aggregate)
    return merged


def closed_rows(window_id: int, groups: Groups) -> list[RollupRow]:
    """The rows of window number ``window_id`` (counted from :data:`EPOCH`)."""
    start = EPOCH + WINDOW * window_id
    return [RollupRow(start, dims, aggregate) for dims, aggregate in sorted(groups.items())]
