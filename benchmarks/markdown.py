"""``results.md``: the report's tables."""

from __future__ import annotations

from typing import Any

import orjson

from benchmarks.report import backlog, cpu_us_per_record


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "–" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _ab_table(results: list[dict]) -> list[str]:
    """A/B pairs: records/s and flow CPU per record, baseline vs with the experiments."""
    rows = []
    for r in results:
        if r.get("part") == "ab":
            phase = r["phases"][0]
            rows.append(
                [
                    r["name"],
                    r.get("experiments") or "–",
                    phase["records_per_s"],
                    cpu_us_per_record(r, phase),
                    r.get("load_avg_after", ["–"])[0],
                ]
            )
    if not rows:
        return []
    lines = ["## A/B: experiments (interleaved runs)", ""]
    header = ["run", "experiments", "records/s", "CPU µs/record", "load after"]
    return lines + _table(header, rows)


def render(report: dict[str, Any]) -> str:
    meta, head = report["meta"], report["headline"]
    m = meta["machine"]
    lines = [
        "# notiflow benchmark",
        "",
        f"{meta['started']} · {m['cpu']} · {m['cores']} cores · {m['memory_gib']} GiB · "
        f"Python {m['python']} · load average at start {m['load_avg_at_start']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        "## Targets",
        "",
    ]
    rows = [
        [k, {True: "met", False: "**not met**", None: "not measured"}[v]]
        for k, v in head["targets"].items()
    ]
    lines += _table(["target", "result"], rows)
    rows = []
    for p in sorted(set(head["null_per_s"]) | set(head["orchestrate_per_s"]), key=int):
        costs = head["cpu_us_per_record"].get(p, {})
        rows.append(
            [
                p,
                head["null_per_s"].get(p),
                head["orchestrate_per_s"].get(p),
                head["ratio"].get(p),
                costs.get("null"),
                costs.get("orchestrate"),
                head["cpu_ratio"].get(p),
            ]
        )
    lines += ["## Throughput", ""]
    header = [
        "processes",
        "null records/s",
        "orchestration records/s",
        "ratio",
        "null CPU µs/record",
        "orchestration CPU µs/record",
        "CPU ratio",
    ]
    lines += _table(header, rows)
    sweep = [r for r in report["scenarios"] if r.get("sweep")]
    if sweep:
        lines += ["## Partition sweep (records/s)", ""]
        by_parts: dict[int, dict[str, Any]] = {}
        for r in sweep:
            by_parts.setdefault(r["partitions"], {})[r["flow"]] = backlog(r)["records_per_s"]
        rows = [[n, v.get("null"), v.get("orchestrate")] for n, v in sorted(by_parts.items())]
        procs = sweep[0]["processes"]
        lines += _table([f"partitions ({procs} processes)", "null pipeline", "orchestration"], rows)
    lines += _ab_table(report["scenarios"])
    lines += ["## Scenarios", ""]
    rows = []
    for r in report["scenarios"]:
        for phase in r["phases"]:
            flows = [p for p in phase["processes"] if p["name"].startswith(r["flow"])]
            rows.append(
                [
                    r["name"],
                    phase["name"],
                    r["processes"],
                    r["partitions"],
                    phase["records"],
                    phase.get("seconds"),
                    phase.get("records_per_s"),
                    phase.get("outcomes_per_s"),
                    " / ".join(f"{p['cpu_pct']:.0f}%" for p in flows),
                    " / ".join(f"{p['peak_rss_mib']:.0f}" for p in flows),
                    cpu_us_per_record(r, phase),
                    "ok" if all(c["ok"] for c in r["checks"]) else "**FAIL**",
                    r.get("load_avg_after", ["–"])[0],
                ]
            )
    lines += _table(
        [
            "scenario",
            "phase",
            "proc",
            "parts",
            "records",
            "s",
            "records/s",
            "outcomes/s",
            "flow CPU",
            "peak RSS MiB",
            "CPU µs/record",
            "counts",
            "load after",
        ],
        rows,
    )
    if head["latency"]:
        lines += ["## Latency: request produced → `sent` event produced (ms)", ""]
        rows = [
            [
                k,
                v["offered"],
                v.get("offered_s"),
                "**yes** (stopped early)" if v.get("overloaded") else "no",
                v["n"],
                v["p50"],
                v["p95"],
                v["p99"],
                v["max"],
                _pct(v.get("machine_busy_pct")),
                _cpu_split(v.get("cpu_pct", {}), v["flow"]),
            ]
            for k, v in head["latency"].items()
        ]
        header = ["scenario", "offered/s", "for s", "overloaded", "sent", "p50", "p95", "p99"]
        lines += _table([*header, "max", "machine busy", "CPU: flow / broker / rest"], rows)
        lines += [
            "Overloaded: the flow fell more than 2 s of offered load behind, so production "
            "stopped at the next block; the percentiles then measure the queue. Notifications "
            "held on purpose (scheduled, quiet hours, deferred, digests) are left out. "
            "Machine busy: every core, every process (100 % = all cores); the CPU split is in "
            "% of one core, for the flow processes, the broker and the rest (stubs, load "
            "generator): on a small machine they compete for the same cores.",
            "",
        ]
    for r in report["scenarios"]:
        if r["flow"] != "null" and r["stages"] and not r.get("sweep"):
            lines += [f"## Where worker time goes: {r['name']} (Bytewax step timings)", ""]
            rows = [
                [
                    s["stage"],
                    s["items_in"],
                    s.get("items_per_call"),
                    s["busy_s"],
                    s["share_pct"],
                    s["us_per_item"],
                    s["items_per_busy_s"],
                ]
                for s in r["stages"][:14]
            ]
            header = [
                "step",
                "items in",
                "items/call",
                "busy s",
                "share %",
                "µs/item",
                "items/busy s",
            ]
            lines += _table(header, rows)
            break
    for name in ("state_memory", "profile"):
        if name in report:
            lines += [
                f"## {name.replace('_', ' ').title()}",
                "",
                "```",
                orjson.dumps(report[name], option=orjson.OPT_INDENT_2).decode(),
                "```",
                "",
            ]
    if report.get("failures"):
        lines += ["## Failed scenarios", "", *[f"- {f}" for f in report["failures"]], ""]
    failed = [(r["name"], c) for r in report["scenarios"] for c in r["checks"] if not c["ok"]]
    lines += ["## Consistency", ""]
    if failed:
        lines += _table(
            ["scenario", "check", "expected", "actual"],
            [[n, c["check"], c["expected"], c["actual"]] for n, c in failed],
        )
    else:
        lines += [f"All {sum(len(r['checks']) for r in report['scenarios'])} checks passed.", ""]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}%"


def _cpu_split(cpu: dict[str, float], flow: str) -> str:
    """Flow processes / broker / everything else, in % of one core."""
    flows = sum(v for name, v in cpu.items() if name.startswith(flow))
    broker = cpu.get("broker", 0.0)
    rest = sum(cpu.values()) - flows - broker
    return f"{flows:.0f} / {broker:.0f} / {rest:.0f}"
