"""Summarise a ``py-spy record -f raw`` profile (collapsed stacks) into the top costs.

Each line is ``frame;frame;...;frame COUNT`` with frames ``function (file:line)``. Self time is
the innermost frame; inclusive time counts a function once per stack it appears in. Files are
shortened to their path under the repository or ``site-packages``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")
#: Flow steps by the function Bytewax calls (first match from the outermost frame).
STEPS = (
    ("parse", "Parser.__call__"),
    ("user_pipeline", "UserLogic.on_"),
    ("user_pipeline: notify_at", "UserLogic.notify_at"),
    ("user_pipeline: snapshot", "UserLogic.snapshot"),
    ("campaign split", "CampaignLogic."),
    ("plan (render, address)", "Planner.__call__"),
    ("deliver (dispatcher)", "Deliverer.__call__"),
    ("encode events/dead letters", "encode_"),
    ("rejection events", "rejection_event"),
    ("Kafka sink", "_ProducerPartition."),
    ("Kafka source", "_PartitionReader."),
    ("metrics endpoint (the benchmark polls it)", "_Handler."),
    ("metrics endpoint (the benchmark polls it)", "BaseServer."),
)
_SHIMS = ("shim_", "_StatefulLogic", "_CollectLogic", "_BranchLogic")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        if match:
            out.append((match["func"], _short(match["file"])))
    return out


def summarise(path: Path, top: int = 20) -> dict[str, Any]:
    """Top functions by self and inclusive share of samples, and self share by file."""
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_file: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        samples += count
        func, file = frames[-1]
        self_fn[f"{func} ({file})"] += count
        self_file[file] += count
        for name in {f"{f} ({p})" for f, p in frames}:
            incl_fn[name] += count
        steps[_step(frames)] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / samples, 1)) for k, v in counter.most_common(top)]

    if not samples:
        return {"samples": 0}
    return {
        "samples": samples,
        "self_pct": share(self_fn),
        "inclusive_pct": share(incl_fn),
        "self_by_file_pct": share(self_file),
        "by_step_pct": share(steps),
    }


def _step(frames: list[tuple[str, str]]) -> str:
    for func, _file in frames:
        for step, prefix in STEPS:
            if func.startswith(prefix):
                return step
    if frames[-1][0] == "<module>":
        return "Bytewax runtime (Rust, between Python calls)"
    if any(func.startswith(_SHIMS) or ".shim_" in func for func, _file in frames):
        return "Bytewax operator shims (map/key_on/branch/collect)"
    return "other"
