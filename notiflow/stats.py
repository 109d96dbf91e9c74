"""``notiflow stats``: delivery counts per channel x status, latency, funnel and providers.

The summary comes from ``sql/queries/delivery_summary.sql`` (one query, bound parameters),
shaped into :class:`StatsSummary`; :func:`render_details` adds the delivery funnel and the
provider outcomes from the query library (``notiflow.queries``). All rendered with rich.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

from clickhouse_connect.driver.client import Client
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from notiflow import queries
from notiflow.clickhouse import SQL_DIR
from schemas.event import DeliveryStatus

logger = logging.getLogger(__name__)

SUMMARY_QUERY = SQL_DIR / "queries" / "delivery_summary.sql"
NO_CHANNEL_LABEL = "(request)"
_STATUS_ORDER = {status.value: index for index, status in enumerate(DeliveryStatus)}
# GROUPING(channel, status) bits: 1 when a column is aggregated away.
_LEVEL_CELL, _LEVEL_CHANNEL, _LEVEL_TOTAL = 0, 1, 3


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency quantiles in milliseconds."""

    p50: float
    p95: float
    p99: float


@dataclass(frozen=True, slots=True)
class StatsSummary:
    """Deduplicated event counts and sent-latency quantiles for one filter.

    ``channel`` keys are ``''`` for request-level events; a latency is ``None`` where
    there were no ``sent`` events.
    """

    counts: dict[tuple[str, str], int]
    channel_totals: dict[str, int]
    total: int
    sent_latency_ms: Latency | None
    channel_sent_latency_ms: dict[str, Latency | None]
    since: datetime | None = None
    tenant: str | None = None
    channel: str | None = None
    statuses: list[str] = field(default_factory=list)

    def status_totals(self) -> dict[str, int]:
        """Events per status over all channels."""
        totals: dict[str, int] = {}
        for (_, status), count in self.counts.items():
            totals[status] = totals.get(status, 0) + count
        return totals


@cache
def _summary_sql() -> str:
    return SUMMARY_QUERY.read_text()


def _latency(quantiles: Sequence[float]) -> Latency | None:
    """``Latency`` from ``[p50, p95, p99]``; ``None`` when ClickHouse had no values (NaN)."""
    if len(quantiles) != 3 or any(math.isnan(value) for value in quantiles):
        return None
    return Latency(*(float(value) for value in quantiles))


def _status_key(status: str) -> tuple[int, str]:
    return (_STATUS_ORDER.get(status, len(_STATUS_ORDER)), status)


def summary(
    client: Client,
    database: str,
    since: datetime | None = None,
    tenant: str | None = None,
    channel: str | None = None,
) -> StatsSummary:
    """Run the delivery summary. ``since`` filters ``requested_at`` (naive means UTC);
    ``channel=''`` selects request-level events."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    parameters = {"database": database, "since": since, "tenant": tenant, "channel": channel}
    rows = client.query(_summary_sql(), parameters=parameters).result_rows
    counts: dict[tuple[str, str], int] = {}
    channel_totals: dict[str, int] = {}
    channel_latency: dict[str, Latency | None] = {}
    total, overall = 0, None
    for row_channel, status, level, events, quantiles in rows:
        if level == _LEVEL_CELL:
            counts[(row_channel, status)] = int(events)
        elif level == _LEVEL_CHANNEL:
            channel_totals[row_channel] = int(events)
            channel_latency[row_channel] = _latency(quantiles)
        elif level == _LEVEL_TOTAL:
            total, overall = int(events), _latency(quantiles)
    statuses = sorted({status for _, status in counts}, key=_status_key)
    logger.debug("stats summary", extra={"rows": len(rows), "events": total})
    return StatsSummary(
        counts=counts,
        channel_totals=channel_totals,
        total=total,
        sent_latency_ms=overall,
        channel_sent_latency_ms=channel_latency,
        since=since,
        tenant=tenant,
        channel=channel,
        statuses=statuses,
    )


def _channel_label(channel: str) -> str:
    return escape(channel) if channel else NO_CHANNEL_LABEL


def _ms(value: float) -> str:
    return f"{value:,.1f}"


def render_summary(summary: StatsSummary, console: Console) -> None:
    """Print the counts matrix (channel x status) and the sent-latency table."""
    filters = [
        f"since {summary.since.isoformat()}" if summary.since else "all time",
        f"tenant {escape(summary.tenant)}" if summary.tenant is not None else "all tenants",
        f"channel {_channel_label(summary.channel)}"
        if summary.channel is not None
        else "all channels",
    ]
    counts = Table(title=f"Delivery events ({', '.join(filters)})", show_footer=True)
    counts.add_column("channel", footer="total")
    status_totals = summary.status_totals()
    for status in summary.statuses:
        counts.add_column(escape(status), justify="right", footer=f"{status_totals[status]:,}")
    counts.add_column("total", justify="right", footer=f"{summary.total:,}", style="bold")
    for channel, channel_total in summary.channel_totals.items():
        cells = [summary.counts.get((channel, status), 0) for status in summary.statuses]
        counts.add_row(
            _channel_label(channel),
            *(f"{cell:,}" if cell else "·" for cell in cells),
            f"{channel_total:,}",
        )
    console.print(counts)
    if summary.total == 0:
        console.print("[dim]No events match.[/dim]")
        return

    latency = Table(title="Latency of sent events (ms)")
    for name in ("channel", "sent", "p50", "p95", "p99"):
        latency.add_column(name, justify="left" if name == "channel" else "right")
    rows: list[tuple[str, int, Latency | None]] = [
        (_channel_label(channel), summary.counts.get((channel, "sent"), 0), value)
        for channel, value in summary.channel_sent_latency_ms.items()
        if value is not None
    ]
    rows.append(("all", status_totals.get("sent", 0), summary.sent_latency_ms))
    for label, sent, value in rows:
        if value is None:
            latency.add_row(label, f"{sent:,}", "–", "–", "–")
        else:
            latency.add_row(label, f"{sent:,}", _ms(value.p50), _ms(value.p95), _ms(value.p99))
    console.print(latency)


def format_cell(value: object) -> str:
    """A table cell: thousands separators, rates as percentages, NaN/NULL as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return escape(str(value)) or "·"


def query_table(result: queries.QueryResult, title: str) -> Table:
    """A rich table of a query result; ``*_rate`` columns shown as percentages."""
    table = Table(title=title)
    for column in result.columns:
        numeric = bool(result.rows) and isinstance(
            result.rows[0][result.columns.index(column)], int | float
        )
        table.add_column(column, justify="right" if numeric else "left")
    for row in result.rows:
        cells = []
        for column, value in zip(result.columns, row, strict=True):
            rate = column.endswith("_rate") and isinstance(value, float) and not math.isnan(value)
            cells.append(f"{value:.1%}" if rate else format_cell(value))
        table.add_row(*cells)
    return table


def render_details(
    client: Client,
    database: str,
    console: Console,
    since: datetime | None = None,
    tenant: str | None = None,
    channel: str | None = None,
) -> None:
    """Print the delivery funnel and provider outcomes for the same filters as the summary."""
    filters = {"since": since, "tenant": tenant, "channel": channel}
    funnel = queries.run_filtered(client, database, "delivery_funnel", **filters)
    if funnel.rows:
        console.print(query_table(funnel, "Delivery funnel (notifications)"))
    outcomes = queries.run_filtered(client, database, "provider_outcomes", **filters)
    if outcomes.rows:
        console.print(query_table(outcomes, "Provider outcomes (events)"))
