"""Per-step cost from Bytewax's own metrics (``BYTEWAX_DATAFLOW_API_ENABLED``).

Bytewax times every call into Python per step (``*_duration_seconds``) and counts items in
and out. Summed over processes, ``busy_s`` is the worker time a step took and ``us_per_item``
its cost; the shares show where a worker's time goes, with no profiler attached.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from benchmarks.procstat import scrape

DURATIONS = (
    "bytewax_inp_part_next_batch_duration_seconds_sum",
    "bytewax_flat_map_batch_duration_seconds_sum",
    "bytewax_stateful_batch_on_batch_duration_seconds_sum",
    "bytewax_stateful_batch_on_notify_duration_seconds_sum",
    "bytewax_stateful_batch_notify_at_duration_seconds_sum",
    "bytewax_stateful_batch_on_eof_duration_seconds_sum",
    "bytewax_out_part_write_batch_duration_seconds_sum",
    "bytewax_snapshot_duration_seconds_sum",
)


def _stage(step_id: str) -> str:
    """``flow.parse.flat_map_batch`` → ``parse`` (the step name given in the flow)."""
    parts = step_id.split(".")
    return parts[1] if len(parts) > 1 else step_id


def collect(ports: list[int]) -> list[dict[str, Any]]:
    """Stages ordered by time spent: items in/out, busy seconds, share, µs per item."""
    busy: dict[str, float] = defaultdict(float)
    calls: dict[str, float] = defaultdict(float)
    items_in: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    items_out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for port in ports:
        samples = scrape(port, timeout=10)
        for name in DURATIONS:
            for labels, value in samples.get(name, ()):
                busy[_stage(labels.get("step_id", "?"))] += value
            if "on_batch" in name or "flat_map_batch" in name or "write_batch" in name:
                for labels, value in samples.get(name.replace("_sum", "_count"), ()):
                    calls[_stage(labels.get("step_id", "?"))] += value
        for name, target in (
            ("bytewax_item_inp_count_total", items_in),
            ("bytewax_item_out_count_total", items_out),
        ):
            for labels, value in samples.get(name, ()):
                step = labels.get("step_id", "?")
                target[_stage(step)][step] += value
    total_busy = sum(busy.values()) or 1.0
    rows = []
    for stage in sorted(busy, key=busy.get, reverse=True):  # type: ignore[arg-type]
        n_in = max(items_in[stage].values(), default=0.0)
        n_out = max(items_out[stage].values(), default=0.0)
        n = n_in or n_out
        rows.append(
            {
                "stage": stage,
                "items_in": int(n_in),
                "items_out": int(n_out),
                "calls": int(calls[stage]),
                "items_per_call": round(n / calls[stage], 1) if calls[stage] else None,
                "busy_s": round(busy[stage], 3),
                "share_pct": round(100 * busy[stage] / total_busy, 1),
                "us_per_item": round(1e6 * busy[stage] / n, 2) if n else None,
                "items_per_busy_s": round(n / busy[stage]) if busy[stage] and n else None,
            }
        )
    return rows
