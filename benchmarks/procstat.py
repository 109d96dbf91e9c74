"""Process and metrics readings without extra dependencies: ``/proc`` and Prometheus text."""

from __future__ import annotations

import os
import platform
import re
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([0-9.eE+-]+|NaN|[+-]Inf)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid`` in KiB; empty when it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        return {}
    return out


@dataclass
class ProcWatch:
    """CPU over a window and peak RSS of one process."""

    name: str
    pid: int
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    peak_rss_kib: int = 0
    rss_kib: int = 0

    def start(self) -> None:
        self.cpu_start = cpu_seconds(self.pid) or 0.0

    def stop(self) -> None:
        self.cpu_end = cpu_seconds(self.pid) or self.cpu_start
        memory = memory_kib(self.pid)
        self.peak_rss_kib = memory.get("VmHWM", 0)
        self.rss_kib = memory.get("VmRSS", 0)

    def as_dict(self, seconds: float) -> dict[str, object]:
        cpu = self.cpu_end - self.cpu_start
        return {
            "name": self.name,
            "pid": self.pid,
            "cpu_s": round(cpu, 2),
            "cpu_pct": round(100 * cpu / seconds, 1) if seconds else 0.0,
            "peak_rss_mib": round(self.peak_rss_kib / 1024, 1),
            "rss_mib": round(self.rss_kib / 1024, 1),
        }


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, all cores (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


@dataclass
class MachineWatch:
    """Share of the whole machine's CPU (every core, every process) busy over a window: on
    a small machine the broker, the stubs and the load generator compete with the flow."""

    start_ticks: tuple[int, int] = (0, 0)
    end_ticks: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self.start_ticks = machine_ticks()

    def stop(self) -> None:
        self.end_ticks = machine_ticks()

    @property
    def busy_pct(self) -> float | None:
        total = self.end_ticks[1] - self.start_ticks[1]
        busy = self.end_ticks[0] - self.start_ticks[0]
        return round(100 * busy / total, 1) if total > 0 else None


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> Samples:
    """Every sample of a Prometheus ``/metrics`` page, by name (empty when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return {}
    samples: Samples = defaultdict(list)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            samples[name].append((dict(_LABEL.findall(labels or "")), float(value)))
    return samples


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of ``name`` over samples whose labels include ``match``."""
    return sum(
        value
        for labels, value in samples.get(name, ())
        if all(labels.get(k) == v for k, v in match.items())
    )
