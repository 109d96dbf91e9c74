"""PNG plots: ``throughput.png`` (records/s over time per scenario) and ``latency_cdf.png``
(produce → ``sent`` latency of each open-loop phase). Skipped when matplotlib is missing."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

P99_TARGET_MS = 100.0
BIN_S = 1.0


def _rates(series: list[list[float]], scale: float) -> list[tuple[float, float]]:
    """Records/s in ``BIN_S`` bins from the cumulative progress series (interpolated)."""
    points = [(t, d) for t, d in series]
    start = next((i for i, (_t, d) in enumerate(points) if d > 0), None)
    if start is None or len(points) - start < 2:
        return []
    t0 = points[start][0]  # the first reading with output (the interval before mixes in start-up)
    points = [(t - t0, d) for t, d in points[start:]]

    def at(t: float) -> float:
        for (ta, da), (tb, db) in itertools.pairwise(points):
            if ta <= t <= tb:
                return da + (db - da) * (t - ta) / (tb - ta) if tb > ta else db
        return points[-1][1]

    end, out, t = points[-1][0], [], 0.0
    while t + BIN_S <= end + 1e-9:
        out.append((t + BIN_S, (at(t + BIN_S) - at(t)) / BIN_S * scale))
        t += BIN_S
    return out


def write(report: dict[str, Any], directory: Path) -> list[Path]:
    """``throughput.png`` and ``latency_cdf.png``; none when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in report["scenarios"]:
        if r.get("part") in ("sweep", "state", "profile"):  # keep the plot readable
            continue
        phase = r["phases"][0]
        scale = phase["records"] / max(1, phase["terminal"] or 1)
        points = _rates(r["series"], scale)
        if points:
            ax.plot(*zip(*points, strict=True), label=r["name"], linewidth=1)
    ax.set_yscale("log")
    ax.set(xlabel="seconds since first output", ylabel="records/s", title="Throughput over time")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    written.append(directory / "throughput.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in report["scenarios"]:
        for phase in r["phases"]:
            if phase["offered_rate"] and phase["latency_cdf"]:
                xs, ys = zip(*phase["latency_cdf"], strict=True)
                ax.plot(
                    [max(x, 0.5) for x in xs],
                    ys,
                    label=f"{r['name']} @ {phase['offered_rate']:,.0f}/s",
                )
    ax.set_xscale("log")
    ax.set(xlabel="produce → sent (ms)", ylabel="fraction", title="Latency CDF")
    ax.axvline(P99_TARGET_MS, color="grey", linestyle=":")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    written.append(directory / "latency_cdf.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return written
