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

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

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

    ``events`` are the wire dicts themselves (references, not copies): only the late path
    reads them.
    """

    window_start: datetime
    tenant_id: str
    groups: Groups
    max_occurred_at: datetime
    events: tuple[dict[str, Any], ...]


class RollupRow(NamedTuple):
    """A closed window's figures for one dims group, as computed in the flow."""

    window_start: datetime
    dims: Dims
    aggregate: Aggregate


def window_start(moment: datetime) -> datetime:
    """Start of the one-minute window holding ``moment`` (aware, UTC)."""
    seconds = int(moment.timestamp() // _WINDOW_S) * _WINDOW_S
    return datetime.fromtimestamp(seconds, UTC)


def _time(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def dims_of(event: dict[str, Any]) -> Dims:
    """The rollup dims of a wire event."""
    return Dims(
        event["tenant_id"], event.get("channel") or "", event.get("provider") or "", event["status"]
    )


def stage(events: Iterable[dict[str, Any]]) -> list[Partial]:
    """Pre-aggregate a batch of shape-checked wire events: one partial per (window, tenant),
    earliest window first (so a batch never makes its own events late)."""
    cells: dict[tuple[int, str, str, str, str], list[Any]] = {}
    for event in events:
        occurred = _time(event["occurred_at"])
        key = (
            int(occurred.timestamp() // _WINDOW_S),
            event["tenant_id"],
            event.get("channel") or "",
            event.get("provider") or "",
            event["status"],
        )  # a plain tuple: building a NamedTuple per event costs more than the rest
        cell = cells.get(key)
        if cell is None:
            # [events, latency_events, latency_sum, latency_max, cost, max_occurred, members]
            cell = cells[key] = [0, 0, 0.0, 0.0, 0.0, occurred, []]
        cell[0] += 1
        latency = event.get("latency_ms")
        if latency is not None:
            cell[1] += 1
            cell[2] += latency
            if latency > cell[3]:
                cell[3] = float(latency)
        cost = event.get("cost_usd")
        if cost is not None:
            cell[4] += cost
        if occurred > cell[5]:
            cell[5] = occurred
        cell[6].append(event)
    partials: dict[tuple[int, str], list[Any]] = {}
    for key, (count, lat_n, lat_sum, lat_max, cost, latest, members) in cells.items():
        partial = partials.setdefault(key[:2], [{}, latest, []])
        partial[0][Dims(*key[1:])] = Aggregate(count, lat_n, float(lat_sum), lat_max, float(cost))
        partial[1] = max(partial[1], latest)
        partial[2].extend(members)
    return [
        Partial(datetime.fromtimestamp(minute * _WINDOW_S, UTC), tenant, groups, latest, tuple(m))
        for (minute, tenant), (groups, latest, m) in sorted(partials.items())
    ]


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
