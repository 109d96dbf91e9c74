"""Which scenarios a run consists of, all built from one generated workload.

Full run (defaults): null pipeline and orchestration (instant providers) at each process
count on the whole workload; end to end with the real connectors against the local stubs on
its first ``e2e_requests``; open-loop latency at ``rate`` for ``duration`` seconds, end to end
and orchestration only; a partition sweep; state memory per active user; a profile. Quick
mode: a few thousand records, one process, and the latency phase appended to the end-to-end
scenario, well under a minute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmarks.loadgen import Workload
from benchmarks.scenario import Phase, Scenario
from benchmarks.state import distinct_users

ALL_PARTS = ("null", "orchestrate", "e2e", "latency", "sweep", "state", "profile")
WARMUP_BLOCKS = 2
STATE_WARMUP_USERS = 20_000
SWEEP_BLOCKS = 300


@dataclass
class Options:
    quick: bool = False
    blocks: int = 1000
    e2e_blocks: int = 100
    processes: list[int] = field(default_factory=lambda: [1, 2])
    e2e_processes: list[int] = field(default_factory=lambda: [2])
    partitions: int = 4
    sweep_partitions: list[int] = field(default_factory=lambda: [2, 4, 8])
    rates: list[float] = field(default_factory=lambda: [5000.0, 1000.0])
    duration_s: float = 30.0
    state_users: int = 200_000
    profile_s: float = 20.0
    parts: tuple[str, ...] = ALL_PARTS
    ab: str = ""  # experiments to compare against the baseline (interleaved pairs)
    ab_repeat: int = 2
    base_experiments: str = ""
    block: int = 1000

    def latency_blocks(self, rate: float) -> int:
        return max(1, math.ceil(rate * self.duration_s / self.block))

    @property
    def workload_blocks(self) -> int:
        """Blocks to generate: enough for every enabled part."""
        heavy = {"null", "orchestrate", "sweep", "profile"} & set(self.parts)
        needed = [self.blocks] if heavy or self.ab else []
        if "e2e" in self.parts:
            needed.append(self.e2e_blocks)
        if "latency" in self.parts or self.quick:
            first = self.e2e_blocks if self.quick else WARMUP_BLOCKS
            needed.append(first + self.latency_blocks(max(self.rates)))
        return max(needed, default=1)


def _backlog(work: Workload, blocks: int) -> Phase:
    records, expect = work.take(0, blocks)
    return Phase("backlog", records, expect, backlog=True)


def _open_loop(o: Options, work: Workload, first_block: int, rate: float) -> Phase:
    count = o.latency_blocks(rate)
    records, expect = work.take(first_block, count)
    blocks = [b.expect for b in work.blocks[first_block : first_block + count]]
    return Phase("open-loop", records, expect, rate=rate, blocks=blocks)


def _latency(o: Options, work: Workload, rate: float) -> list[Phase]:
    warm_records, warm = work.take(0, WARMUP_BLOCKS)
    warmup = Phase("warmup", warm_records, warm, backlog=True)
    return [warmup, _open_loop(o, work, WARMUP_BLOCKS, rate)]


def _ab(o: Options, work: Workload) -> list[tuple[str, Scenario]]:
    """Baseline and baseline + ``o.ab`` experiments, alternating, ``ab_repeat`` times each."""
    both = ",".join(filter(None, (o.base_experiments, o.ab)))
    out = []
    p = max(o.processes)
    for round_ in range(o.ab_repeat):
        for label, experiments in (("A", o.base_experiments), ("B", both)):
            name = f"ab-{label}{round_ + 1}-orchestrate-{p}p"
            env = {"NOTIFLOW_BENCH_EXPERIMENTS": experiments}
            phases = [_backlog(work, min(o.blocks, SWEEP_BLOCKS))]
            out.append(("ab", Scenario(name, "orchestrate", p, o.partitions, phases, env=env)))
    return out


def build(o: Options, work: Workload) -> list[tuple[str, Scenario]]:
    """``(part, scenario)`` in run order."""
    out: list[tuple[str, Scenario]] = []
    parts = o.partitions
    if o.quick:
        one = o.processes[0]
        return [
            ("null", Scenario(f"null-{one}p", "null", one, parts, [_backlog(work, o.blocks)])),
            (
                "orchestrate",
                Scenario(
                    f"orchestrate-{one}p", "orchestrate", one, parts, [_backlog(work, o.blocks)]
                ),
            ),
            (
                "e2e",
                Scenario(
                    f"e2e-{one}p",
                    "e2e",
                    one,
                    parts,
                    [_backlog(work, o.e2e_blocks), _open_loop(o, work, o.e2e_blocks, o.rates[0])],
                ),
            ),
        ]
    for p in o.processes:
        for flow in ("null", "orchestrate"):
            if flow in o.parts:
                out.append(
                    (flow, Scenario(f"{flow}-{p}p", flow, p, parts, [_backlog(work, o.blocks)]))
                )
    if o.ab:
        out += _ab(o, work)
    for p in o.e2e_processes:
        if "e2e" in o.parts:
            out.append(
                ("e2e", Scenario(f"e2e-{p}p", "e2e", p, parts, [_backlog(work, o.e2e_blocks)]))
            )
        if "latency" in o.parts:
            for rate in o.rates:
                for flow in ("e2e", "orchestrate"):
                    name = f"latency-{flow}-{p}p-{rate:g}"
                    phases = _latency(o, work, rate)
                    out.append(("latency", Scenario(name, flow, p, parts, phases)))
    if "sweep" in o.parts:
        p = max(o.processes)
        for n in o.sweep_partitions:
            for flow in ("null", "orchestrate"):
                name = f"{flow}-{p}p-{n}parts"
                phases = [_backlog(work, min(o.blocks, SWEEP_BLOCKS))]
                out.append(("sweep", Scenario(name, flow, p, n, phases)))
    if "state" in o.parts:
        warm_records, warm = distinct_users(STATE_WARMUP_USERS, 0)
        records, expect = distinct_users(o.state_users, STATE_WARMUP_USERS)
        phases = [
            Phase("warmup", warm_records, warm, backlog=True),
            Phase("users", records, expect),
        ]
        out.append(("state", Scenario("state-orchestrate-1p", "orchestrate", 1, parts, phases)))
    if "profile" in o.parts:
        blocks = min(o.blocks, max(50, int(o.profile_s * 15)))
        scenario = Scenario(
            "profile-orchestrate-1p", "orchestrate", 1, parts, [_backlog(work, blocks)]
        )
        scenario.profile_s = o.profile_s
        out.append(("profile", scenario))
    return out
