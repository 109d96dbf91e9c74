"""``python -m benchmarks``: throughput, latency, scaling and state-memory benchmarks.

    python -m benchmarks run                 # the full run (about 15 minutes on 2 cores)
    python -m benchmarks run --quick         # smoke mode (well under a minute)
    python -m benchmarks run --only null,orchestrate --processes 2
    python -m benchmarks loadgen --bootstrap HOST:9092 --requests 100000 --rate 5000
    python -m benchmarks report results/results.json   # re-render Markdown and plots

Results go to ``results/`` (``results.json``, ``results.md``, ``throughput.png``,
``latency_cdf.png``, process logs and the profile). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import math
import shlex
import shutil
import signal
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import loadgen, markdown, plan, producer, profiling, report, state
from benchmarks.procstat import machine
from benchmarks.runner import Bench
from benchmarks.scenario import ScenarioFailed
from benchmarks.stubs import StubProcess

console = Console()


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _options(args: argparse.Namespace) -> plan.Options:
    o = plan.Options(
        blocks=math.ceil(args.requests / args.block),
        e2e_blocks=math.ceil(args.e2e_requests / args.block),
        processes=_ints(args.processes),
        e2e_processes=_ints(args.e2e_processes),
        partitions=args.partitions,
        sweep_partitions=_ints(args.sweep_partitions),
        rates=[float(r) for r in args.rate.split(",")],
        duration_s=args.duration,
        state_users=args.state_users,
        profile_s=args.profile_seconds,
        parts=tuple(args.only.split(",")) if args.only else plan.ALL_PARTS,
        ab=args.ab,
        ab_repeat=args.ab_repeat,
        block=args.block,
    )
    if args.quick:
        o.quick, o.blocks, o.e2e_blocks = True, 3, 3
        o.processes, o.partitions = o.processes[:1], 2
        o.rates, o.duration_s = [400.0], 2000 / 400.0
    return o


def cmd_run(args: argparse.Namespace) -> int:
    o = _options(args)
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    env = dict(item.split("=", 1) for item in args.set)
    o.base_experiments = env.get("NOTIFLOW_BENCH_EXPERIMENTS", "")
    mix = loadgen.Mix(
        users=args.users,
        zipf_s=args.zipf,
        channels=loadgen.parse_channels(args.channels),
        seed=args.seed,
        block=args.block,
    )
    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + shlex.join(sys.argv[1:]),
        "machine": machine(),
        "mix": {**mix.__dict__, "channels": dict(mix.channels)},
        "options": {**o.__dict__, "parts": list(o.parts)},
        "env": env,
    }
    results: list[dict] = []
    failures: list[str] = []
    extra: dict[str, object] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with ExitStack() as stack:
        stubs = {kind: stack.enter_context(StubProcess(kind)) for kind in ("smtp", "webhook")}
        console.print(f"generating {o.workload_blocks * o.block:,} records (seed {mix.seed})…")
        started = time.monotonic()
        work = loadgen.generate(mix, o.workload_blocks, stubs["webhook"].url("hook"))
        meta["generate_s"] = round(time.monotonic() - started, 1)
        scenarios = plan.build(o, work)
        with Progress(*columns, console=console) as progress:
            overall = progress.add_task("scenarios", total=len(scenarios))
            bench = Bench(results_dir, progress, stubs, env)
            for part, scenario in scenarios:
                if part == "profile" and not shutil.which("py-spy"):
                    failures.append(f"{scenario.name}: py-spy is not installed")
                    continue
                try:
                    result = bench.run(scenario)
                except ScenarioFailed as error:
                    failures.append(str(error))
                    progress.console.print(f"[red]{error}")
                    continue
                result["part"], result["sweep"] = part, part == "sweep"
                result["experiments"] = {**env, **scenario.env}.get(
                    "NOTIFLOW_BENCH_EXPERIMENTS", ""
                )
                results.append(result)
                progress.console.print(_line(result))
                if part == "state":
                    extra["state_memory"] = state.summarise(result, o.state_users)
                if part == "profile":
                    path = results_dir / f"{scenario.name}.pyspy.txt"
                    extra["profile"] = {"file": str(path), **profiling.summarise(path)}
                progress.advance(overall)
    built = {**report.build(meta, results, o.processes), **extra, "failures": failures}
    for path in report.write(built, results_dir):
        console.print(f"wrote {path}")
    console.print(markdown.render(built).split("## Scenarios")[0])
    failed = [c for r in results for c in r["checks"] if not c["ok"]]
    return 1 if failed or failures else 0


def _line(result: dict) -> str:
    parts = []
    for phase in result["phases"]:
        text = f"{phase['name']} {phase.get('records_per_s', 0):,}/s"
        if phase["offered_rate"] and phase.get("latency_ms", {}).get("n"):
            text += f", p99 {phase['latency_ms']['p99']:.0f} ms"
        parts.append(text)
    ok = all(c["ok"] for c in report.checks(result))
    return f"{result['name']}: " + "; ".join(parts) + ("" if ok else " [red]counts off[/]")


def cmd_loadgen(args: argparse.Namespace) -> int:
    mix = loadgen.Mix(
        users=args.users,
        zipf_s=args.zipf,
        seed=args.seed,
        channels=loadgen.parse_channels(args.channels),
    )
    work = loadgen.generate(mix, math.ceil(args.requests / mix.block), args.webhook_url)
    records, expect = work.take(0, len(work.blocks))
    stats = producer.produce(
        {"bootstrap.servers": args.bootstrap}, args.topic, records, rate=args.rate or None
    )
    console.print(f"produced {stats.records:,} in {stats.seconds:.1f}s ({stats.rate:,.0f}/s)")
    console.print_json(orjson.dumps(expect.as_dict()).decode())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = Path(args.json)
    built = report.refresh(orjson.loads(path.read_bytes()))
    for written in report.write(built, path.parent):
        console.print(f"wrote {written}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the benchmark and write results")
    run.add_argument("--quick", action="store_true", help="smoke mode (well under a minute)")
    run.add_argument("--requests", type=int, default=1_000_000, help="records per throughput run")
    run.add_argument("--e2e-requests", type=int, default=100_000, help="records, end to end")
    run.add_argument("--processes", default="1,2", help="process counts to compare")
    run.add_argument("--e2e-processes", default="2", help="process counts, end to end/latency")
    run.add_argument("--partitions", type=int, default=4)
    run.add_argument("--sweep-partitions", default="2,4,8", help="partition counts to compare")
    run.add_argument(
        "--rate", default="5000,1000", help="latency: offered records/s (comma list; first: target)"
    )
    run.add_argument("--duration", type=float, default=30.0, help="latency: seconds")
    run.add_argument("--state-users", type=int, default=200_000, help="active users measured")
    run.add_argument("--profile-seconds", type=float, default=20.0)
    run.add_argument("--only", help=f"comma list of {','.join(plan.ALL_PARTS)}")
    run.add_argument(
        "--ab",
        default="",
        metavar="EXPERIMENTS",
        help="also run orchestration with these experiments vs without, interleaved",
    )
    run.add_argument("--ab-repeat", type=int, default=2, help="A/B pairs")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NOTIFLOW_X=V",
        help="environment for the flow processes (repeatable)",
    )
    run.add_argument("--results", default="results")
    _mix_args(run)
    run.set_defaults(func=cmd_run)
    gen = sub.add_parser("loadgen", help="produce the workload to a broker")
    gen.add_argument("--bootstrap", required=True)
    gen.add_argument("--topic", default="notifications.requests")
    gen.add_argument("--requests", type=int, default=100_000)
    gen.add_argument("--rate", type=float, default=0.0, help="records/s (0: as fast as possible)")
    gen.add_argument("--webhook-url", default="http://127.0.0.1:8080/hook")
    _mix_args(gen)
    gen.set_defaults(func=cmd_loadgen)
    rep = sub.add_parser("report", help="re-render results.md and the plots from results.json")
    rep.add_argument("json")
    rep.set_defaults(func=cmd_report)
    return parser


def _mix_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=1_000_000, help="user population")
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of user draws")
    parser.add_argument("--channels", default="email=0.7,webhook=0.3", help="channel weights")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--block", type=int, default=1000, help=argparse.SUPPRESS)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so every context manager stops its processes


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
