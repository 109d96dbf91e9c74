"""Results: consistency checks, headline figures against the targets, files.

``results.json`` holds everything (latency samples reduced to a CDF); ``results.md`` the
tables (``benchmarks.markdown``); the PNGs come from ``benchmarks.plots``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from benchmarks import plots

TARGETS = {"ratio": 0.5, "e2e_per_s": 13_900, "p99_ms": 100.0}
CDF_POINTS = 200


def checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Counts that must add up for one scenario: ``(name, expected, actual, ok)`` rows."""
    phases = result["phases"]
    rows: list[tuple[str, float, float]] = []
    if result["flow"] == "null":
        rows.append(("sunk = produced", phases[0]["records"], phases[0]["terminal"]))
    else:
        ev = result["events"]
        st, ch = ev["statuses"], ev["channels"]
        exp: dict[str, Any] = {}
        for phase in phases:
            for key, value in phase["expect"].items():
                if isinstance(value, dict):
                    bucket = exp.setdefault(key, {})
                    for k, v in value.items():
                        bucket[k] = bucket.get(k, 0) + v
                else:
                    exp[key] = exp.get(key, 0) + value
        rows += [
            ("terminal outcomes = expected", exp["units"], ev["terminal"]),
            ("rejected = malformed", exp["malformed"], st.get("rejected", 0)),
            (
                "deduplicated = id + content duplicates",
                exp["id_duplicates"] + exp["content_duplicates"],
                st.get("deduplicated", 0),
            ),
            ("scheduled", exp["scheduled"], st.get("scheduled", 0)),
            ("held for quiet hours", exp["quiet"], ch.get("-:held_quiet_hours", 0)),
            ("digested", exp["digest_items"], st.get("digested", 0)),
            (
                "DLQ = rejected + dead_lettered + failed",
                sum(st.get(k, 0) for k in ("rejected", "dead_lettered", "failed")),
                ev["dlq"],
            ),
        ]
        for channel, n in sorted(exp["deliveries"].items()):
            done = sum(v for k, v in ch.items() if k.startswith(f"{channel}:"))
            rows.append((f"{channel} deliveries ended", n, done))
        for phase in phases:
            rows.append((f"{phase['name']}: terminal", phase["expect"]["units"], phase["terminal"]))
        for kind, received in result.get("stub_received", {}).items():
            channel = "email" if kind == "smtp" else kind
            rows.append(
                (f"{kind} stub received = {channel}:sent", ch.get(f"{channel}:sent", 0), received)
            )
    return [{"check": n, "expected": e, "actual": a, "ok": e == a} for n, e, a in rows]


def _cdf(latencies: list[float]) -> list[tuple[float, float]]:
    ordered = sorted(latencies)
    if not ordered:
        return []
    step = max(1, len(ordered) // CDF_POINTS)
    points = [(ordered[i], (i + 1) / len(ordered)) for i in range(0, len(ordered), step)]
    return [*points, (ordered[-1], 1.0)]


def backlog(result: dict[str, Any]) -> dict[str, Any] | None:
    return next((p for p in result["phases"] if p["name"] == "backlog"), None)


def cpu_us_per_record(result: dict[str, Any], phase: dict[str, Any]) -> float | None:
    """CPU time of the flow processes per record: a cost that contention does not inflate
    as much as wall-clock throughput."""
    cpu = sum(p["cpu_s"] for p in phase["processes"] if p["name"].startswith(result["flow"]))
    records = phase.get("cpu_records", phase["records"])
    return round(1e6 * cpu / records, 1) if records and cpu else None


def _main(results: list[dict], flow: str, processes: int) -> tuple[dict, dict] | None:
    for r in results:
        phase = backlog(r)
        main = r.get("part", flow) == flow  # not a sweep, state or profile scenario
        if r["flow"] == flow and r["processes"] == processes and phase and main:
            return r, phase
    return None


def _rate(results: list[dict], flow: str, processes: int) -> int | None:
    found = _main(results, flow, processes)
    return found[1]["records_per_s"] if found else None


def headline(results: list[dict], processes: list[int]) -> dict[str, Any]:
    """The figures the issue asks for, with pass/fail against ``TARGETS``."""
    out: dict[str, Any] = {
        "null_per_s": {},
        "orchestrate_per_s": {},
        "ratio": {},
        "cpu_us_per_record": {},
        "cpu_ratio": {},
        "latency": {},
    }
    for p in processes:
        null, orch = _rate(results, "null", p), _rate(results, "orchestrate", p)
        if null is not None:
            out["null_per_s"][p] = null
        if orch is not None:
            out["orchestrate_per_s"][p] = orch
        if null and orch is not None:
            out["ratio"][p] = round(orch / null, 3)
        costs = {}
        for flow in ("null", "orchestrate"):
            found = _main(results, flow, p)
            if found:
                costs[flow] = cpu_us_per_record(*found)
        out["cpu_us_per_record"][p] = costs
        if costs.get("null") and costs.get("orchestrate"):
            out["cpu_ratio"][p] = round(costs["null"] / costs["orchestrate"], 3)
    e2e = [
        (r, backlog(r))
        for r in results
        if r["flow"] == "e2e" and backlog(r) and r.get("part", "e2e") == "e2e"
    ]
    if e2e:
        best, phase = max(e2e, key=lambda rp: rp[1]["records_per_s"])
        out["e2e"] = {
            "scenario": best["name"],
            "records_per_s": phase["records_per_s"],
            "outcomes_per_s": phase["outcomes_per_s"],
            "sent_per_s": round(
                sum(v for k, v in best["events"]["channels"].items() if k.endswith(":sent"))
                / phase["seconds"]
            )
            if phase["seconds"]
            else 0,
        }
    for r in results:
        for phase in r["phases"]:
            if phase["offered_rate"] and phase.get("latency_ms", {}).get("n"):
                out["latency"][r["name"]] = {
                    "flow": r["flow"],
                    "offered": phase["offered_rate"],
                    "achieved": phase["producer"].get("rate"),
                    "overloaded": phase.get("overloaded", False),
                    "offered_s": round(phase["records"] / phase["offered_rate"], 1),
                    "machine_busy_pct": phase.get("machine_busy_pct"),
                    "cpu_pct": {p["name"]: p["cpu_pct"] for p in phase["processes"]},
                    **phase["latency_ms"],
                }
    ratio = max(out["ratio"].values(), default=None)
    e2e_rate = out["e2e"]["records_per_s"] if "e2e" in out else None
    target_rate = max((v["offered"] for v in out["latency"].values()), default=None)
    lat = next(
        (v for v in out["latency"].values() if v["flow"] == "e2e" and v["offered"] == target_rate),
        None,
    )
    out["targets"] = {
        "orchestration >= 0.5x null pipeline": None if ratio is None else ratio >= TARGETS["ratio"],
        "end to end with sinks >= 13,900/s": None
        if e2e_rate is None
        else e2e_rate >= TARGETS["e2e_per_s"],
        "p99 <= 100 ms at the offered rate": None
        if lat is None
        else lat["p99"] <= TARGETS["p99_ms"],
    }
    return out


def build(meta: dict[str, Any], results: list[dict], processes: list[int]) -> dict[str, Any]:
    """The report: meta, headline, scenarios (with checks), latency samples as CDFs."""
    for r in results:
        for phase in r["phases"]:
            phase["latency_cdf"] = _cdf(phase.pop("latencies_ms", []))
    return refresh({"meta": meta, "scenarios": results}, processes)


def refresh(built: dict[str, Any], processes: list[int] | None = None) -> dict[str, Any]:
    """(Re)compute checks and the headline from the scenarios."""
    if processes is None:
        processes = sorted({r["processes"] for r in built["scenarios"]})
    for r in built["scenarios"]:
        r["checks"] = checks(r)
    built["headline"] = headline(built["scenarios"], processes)
    return built


def write(report: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    from benchmarks import markdown  # it reads this module's helpers

    (directory / "results.md").write_text(markdown.render(report))
    return [directory / "results.json", directory / "results.md", *plots.write(report, directory)]
