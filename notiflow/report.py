"""``notiflow stats --report DIR``: PNG charts and an HTML page that shows them.

Three charts, from the same SQL as the tables, so they work on chDB and on a server alike:
throughput over time (per-minute rollups, ``throughput.sql``), the outcome mix per channel
(``delivery_summary.sql``) and acceptance → sent latency percentiles per channel
(``latency_accept_to_sent.sql``). The page adds the key figures, the funnel and the provider
outcomes. matplotlib's object API is used (no pyplot state), imported only here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client
from matplotlib import colormaps
from matplotlib.figure import Figure

from notiflow import queries, stats

THROUGHPUT_PNG = "throughput.png"
OUTCOMES_PNG = "outcomes.png"
LATENCY_PNG = "latency.png"
INDEX_HTML = "index.html"
DPI = 100
MINUTE_S, HOUR_S, DAY_S = 60, 3600, 86400
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
    "td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%;border:1px solid #ddd;margin-bottom:1rem}"
)


def _empty(axes: Any, message: str = "No data for these filters") -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="#666")
    axes.set_axis_off()


def _bucket_seconds(client: Client, database: str, filters: dict[str, Any]) -> int:
    """A bucket giving a readable number of points: minutes, hours or days by span."""
    days = queries.run_filtered(client, database, "throughput", bucket_seconds=DAY_S, **filters)
    span = len({row[0] for row in days.rows})
    return MINUTE_S if span <= 2 else HOUR_S if span <= 14 else DAY_S


def throughput_chart(
    client: Client, database: str, filters: dict[str, Any], path: Path
) -> queries.QueryResult:
    """Events per minute, stacked by outcome, every bucket of the span (empty ones as 0)."""
    bucket = _bucket_seconds(client, database, filters)
    result = queries.run_filtered(client, database, "throughput", bucket_seconds=bucket, **filters)
    figure = Figure(figsize=(11, 4.2), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    series: dict[str, dict[datetime, float]] = {}
    late = 0
    for moment, outcome, events, late_events in result.rows:
        series.setdefault(outcome, {})[moment] = events / (bucket / MINUTE_S)
        late += late_events
    if series:
        first = min(min(points) for points in series.values())
        last = max(max(points) for points in series.values())
        steps = [first + timedelta(seconds=bucket * i) for i in range(_steps(first, last, bucket))]
        outcomes = sorted(series)
        values = [[series[o].get(m, 0.0) for m in steps] for o in outcomes]
        axes.stackplot(  # the last bucket repeated at its end, so every bucket has a width
            [*steps, steps[-1] + timedelta(seconds=bucket)],
            [[*row, row[-1]] for row in values],
            labels=outcomes,
            step="post",
        )
        axes.set_ylabel("events / minute")
        axes.set_xlabel("UTC")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        axes.grid(alpha=0.3)
        figure.autofmt_xdate()
    else:
        _empty(axes)
    axes.set_title(f"Throughput by outcome ({bucket // MINUTE_S} min buckets, {late:,} late)")
    figure.savefig(path)
    return result


def _steps(first: datetime, last: datetime, bucket: int) -> int:
    return int((last - first).total_seconds()) // bucket + 1


def outcomes_chart(summary: stats.StatsSummary, path: Path) -> None:
    """Share of each status in each channel's events (horizontal stacked bars)."""
    height = 1.6 + 0.6 * max(1, len(summary.channel_totals))
    figure = Figure(figsize=(11, height), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    channels = list(summary.channel_totals)
    if not channels:
        _empty(axes)
    labels = [channel or stats.NO_CHANNEL_LABEL for channel in channels]
    left = [0.0] * len(channels)
    palette = colormaps["tab20"]
    for index, status in enumerate(summary.statuses):
        shares = [
            100 * summary.counts.get((channel, status), 0) / summary.channel_totals[channel]
            for channel in channels
        ]
        axes.barh(labels, shares, left=left, label=status, color=palette(index % palette.N))
        left = [a + b for a, b in zip(left, shares, strict=True)]
    if channels:
        axes.set_xlabel("% of the channel's events")
        axes.set_xlim(0, 100)
        axes.invert_yaxis()
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    axes.set_title("Outcome mix per channel")
    figure.savefig(path)


def latency_chart(
    client: Client, database: str, filters: dict[str, Any], path: Path
) -> queries.QueryResult:
    """p50/p95/p99 of acceptance → sent per channel (grouped bars); returns the rows."""
    result = queries.run_filtered(client, database, "latency_accept_to_sent", **filters)
    figure = Figure(figsize=(11, 4), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    rows = [row for row in result.rows if not any(math.isnan(v) for v in row[2])]
    width = 0.27
    for index, name in enumerate(("p50", "p95", "p99")):
        positions = [i + (index - 1) * width for i in range(len(rows))]
        if rows:
            axes.bar(positions, [row[2][index] for row in rows], width, label=name)
    if rows:
        axes.set_xticks(range(len(rows)), [row[0] or "all" for row in rows])
        axes.set_ylabel("milliseconds")
        axes.legend(fontsize=8)
        axes.grid(axis="y", alpha=0.3)
    else:
        _empty(axes, "No notification was both accepted and sent")
    axes.set_title("Acceptance → sent latency per channel")
    figure.savefig(path)
    return result


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(_text(c, v))}</td>" for c, v in zip(columns, row, strict=True))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _text(column: str, value: Any) -> str:
    if isinstance(value, float) and column.endswith("_rate") and not math.isnan(value):
        return f"{value:.1%}"
    return value if isinstance(value, str) else stats.format_cell(value)


def write_report(
    client: Client,
    database: str,
    directory: Path | str,
    since: datetime | None = None,
    tenant: str | None = None,
    channel: str | None = None,
) -> Path:
    """Write the three PNGs and ``index.html`` into ``directory``; return the page's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    filters = {"since": since, "tenant": tenant, "channel": channel}
    summary = stats.summary(client, database, since=since, tenant=tenant, channel=channel)
    throughput_chart(client, database, filters, out / THROUGHPUT_PNG)
    outcomes_chart(summary, out / OUTCOMES_PNG)
    latency_chart(client, database, filters, out / LATENCY_PNG)
    funnel = queries.run_filtered(client, database, "delivery_funnel", **filters)
    providers = queries.run_filtered(client, database, "provider_outcomes", **filters)
    totals = summary.status_totals()
    figures = [("events", summary.total), *sorted(totals.items(), key=lambda kv: -kv[1])]
    if summary.sent_latency_ms is not None:
        latency = summary.sent_latency_ms
        figures += [
            (
                "sent latency p50/p95/p99 (ms)",
                f"{latency.p50:,.0f} / {latency.p95:,.0f} / {latency.p99:,.0f}",
            )
        ]
    described = ", ".join(f"{k} {v}" for k, v in filters.items() if v is not None) or "no filters"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>notiflow delivery report</title>
<style>{_STYLE}</style></head><body>
<h1>notiflow delivery report</h1>
<p>{html.escape(described)} · generated {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC</p>
<h2>Key figures</h2>{_html_table(("figure", "value"), figures)}
<h2>Throughput</h2><img src="{THROUGHPUT_PNG}" alt="throughput over time by outcome">
<h2>Outcome mix per channel</h2><img src="{OUTCOMES_PNG}" alt="outcome mix per channel">
<h2>Latency</h2><img src="{LATENCY_PNG}" alt="acceptance to sent latency percentiles">
<h2>Delivery funnel</h2>{_html_table(funnel.columns, funnel.rows)}
<h2>Provider outcomes</h2>{_html_table(providers.columns, providers.rows)}
</body></html>
"""
    index = out / INDEX_HTML
    index.write_text(page, encoding="utf-8")
    return index
