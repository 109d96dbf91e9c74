"""What a benchmark run is made of: scenarios of phases of generated load."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.loadgen import Expectation, Record


@dataclass
class Phase:
    name: str
    records: list[Record]
    expect: Expectation
    rate: float | None = None  # open loop at this rate; None: as fast as possible
    backlog: bool = False  # produced before the flow starts (only leading phases)
    blocks: list[Expectation] = field(default_factory=list)  # per block, to stop early

    def truncated(self, records: int) -> Expectation:
        """The expectation of the first ``records`` records (a whole number of blocks)."""
        if records == self.expect.records or not self.blocks:
            return self.expect
        out, seen = Expectation(), 0
        for block in self.blocks:
            if seen >= records:
                break
            out.add(block)
            seen += block.records
        return out


@dataclass
class Scenario:
    name: str
    flow: str  # null | orchestrate | e2e
    processes: int
    partitions: int
    phases: list[Phase]
    profile_s: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    def units(self, phase: Phase) -> int:
        """What completes ``phase``: sunk items (null flow) or terminal outcomes."""
        return self.units_of(phase.expect)

    def units_of(self, expect: Expectation) -> int:
        return expect.records if self.flow == "null" else expect.units


class ScenarioFailed(RuntimeError):
    pass
