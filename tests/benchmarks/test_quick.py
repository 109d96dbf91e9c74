"""The benchmark's smoke mode: it runs, writes its report, and the counts in it add up."""

from __future__ import annotations

import orjson
import pytest

from benchmarks.__main__ import main
from benchmarks.loadgen import TERMINAL

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[int, dict, object]:
    results = tmp_path_factory.mktemp("bench")
    code = main(["run", "--quick", "--results", str(results)])
    return code, orjson.loads((results / "results.json").read_bytes()), results


def test_quick_run_writes_every_artifact(report):
    code, data, results = report
    assert code == 0
    for name in ("results.json", "results.md", "throughput.png", "latency_cdf.png"):
        assert (results / name).stat().st_size > 0, name
    assert [s["flow"] for s in data["scenarios"]] == ["null", "orchestrate", "e2e"]


def test_every_consistency_check_passes(report):
    _code, data, _results = report
    failed = [(s["name"], c) for s in data["scenarios"] for c in s["checks"] if not c["ok"]]
    assert failed == []


def test_counts_add_up(report):
    _code, data, _results = report
    null, *orchestrations = data["scenarios"]
    assert null["phases"][0]["terminal"] == null["phases"][0]["records"] > 0
    for scenario in orchestrations:
        events, phases = scenario["events"], scenario["phases"]
        statuses = events["statuses"]
        expect = {
            key: sum(p["expect"][key] for p in phases)
            for key in ("records", "units", "malformed", "id_duplicates", "content_duplicates")
        }
        terminal = sum(n for status, n in statuses.items() if status in TERMINAL)
        assert terminal == expect["units"] == sum(p["terminal"] for p in phases)
        assert statuses["rejected"] == expect["malformed"] > 0
        assert statuses["deduplicated"] == expect["id_duplicates"] + expect["content_duplicates"]
        dead = statuses.get("dead_lettered", 0) + statuses.get("failed", 0)
        assert events["dlq"] == statuses["rejected"] + dead
        sent = {k.split(":")[0]: n for k, n in events["channels"].items() if k.endswith(":sent")}
        delivered = {}
        for phase in phases:
            for channel, n in phase["expect"]["deliveries"].items():
                delivered[channel] = delivered.get(channel, 0) + n
        assert sent == delivered
    e2e = orchestrations[-1]
    assert e2e["stub_received"] == {"smtp": sent["email"], "webhook": sent["webhook"]}


def test_headline_figures_are_present(report):
    _code, data, _results = report
    head = data["headline"]
    assert head["null_per_s"]["1"] > 0 and head["orchestrate_per_s"]["1"] > 0
    assert head["ratio"]["1"] > 0
    assert head["e2e"]["records_per_s"] > 0
    latency = head["latency"]["e2e-1p"]
    assert latency["n"] > 0 and 0 <= latency["p50"] <= latency["p99"] <= latency["max"]
    for scenario in data["scenarios"]:
        for phase in scenario["phases"]:
            flow = [p for p in phase["processes"] if p["name"].startswith(scenario["flow"])]
            assert flow and all(p["peak_rss_mib"] > 0 for p in flow)
