"""Following a running scenario: progress from the processes' ``/metrics``, and feeding a
phase while the flow runs (open loop, stopped early when the flow falls behind)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from benchmarks.cluster import FlowCluster
from benchmarks.loadgen import TERMINAL
from benchmarks.procstat import scrape, total
from benchmarks.producer import produce
from benchmarks.scenario import Phase, Scenario, ScenarioFailed

POLL_S = 0.5
STALL_S = 60.0
MAX_LAG_S = 2.0
DRAIN_TIMEOUT_S = 30.0


def _progress(ports: list[int], flow: str) -> float:
    """Terminal outcomes (null flow: sunk items) counted by the processes so far."""
    done = 0.0
    for port in ports:
        samples = scrape(port)
        if flow == "null":
            done += total(samples, "notiflow_bench_null_items_total")
            continue
        for labels, value in samples.get("notiflow_outcomes_total", ()):
            if labels.get("status") in TERMINAL:
                done += value
    return done


class Poll:
    """Progress readings of one scenario (kept as a time series for the throughput plot)."""

    def __init__(self, cluster: FlowCluster, flow: str, on_update: Callable[[float], None]):
        self.cluster, self.flow, self.on_update = cluster, flow, on_update
        self.t0 = time.time()
        self.last = 0.0
        self.series: list[tuple[float, float]] = []

    def until(self, reached: Callable[[float], bool]) -> float:
        """Poll until ``reached(done)``; return that moment. Fails on an exit or a stall."""
        moved = time.monotonic()
        while True:
            if (exited := self.cluster.poll()) is not None:
                raise ScenarioFailed(exited)
            done = _progress(self.cluster.metrics_ports, self.flow)
            now = time.time()
            if done != self.last or not self.series:
                moved = time.monotonic()
                self.series.append((round(now - self.t0, 3), done))
            hit = reached(done)
            self.last = done
            self.on_update(done)
            if hit:
                return now
            if time.monotonic() - moved > STALL_S:
                raise ScenarioFailed(
                    f"no progress for {STALL_S:.0f}s at {done:.0f}; by status: {self.statuses()}"
                )
            time.sleep(POLL_S)

    def drained(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until every event and dead letter counted has been acknowledged by Kafka.

        Outcomes are counted when encoded, before the sink writes them; stopping the flow at
        that moment could lose the last batch.
        """
        if self.flow == "null":
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = 0.0
            for port in self.cluster.metrics_ports:
                m = scrape(port)
                if not m:  # unreachable: unknown, keep waiting
                    pending += 1
                    continue
                counted = total(m, "notiflow_outcomes_total") + total(
                    m, "notiflow_dlq_messages_total"
                )
                pending += counted - total(m, "notiflow_messages_produced_total")
            if pending <= 0:
                return True
            time.sleep(POLL_S)
        return False

    def statuses(self) -> dict[str, float]:
        """Outcomes by ``channel:status`` summed over processes (for a stall report)."""
        out: dict[str, float] = {}
        for port in self.cluster.metrics_ports:
            for labels, value in scrape(port).get("notiflow_outcomes_total", ()):
                key = f"{labels.get('channel') or '-'}:{labels.get('status')}"
                out[key] = out.get(key, 0) + value
        return out


class Feed:
    """Produces a phase while it runs; stops early, at a block end, when the flow falls more
    than ``MAX_LAG_S`` of offered load behind (the latency would only measure the queue)."""

    def __init__(
        self, sc: Scenario, phase: Phase, done_before: float, config: dict, topic: str
    ) -> None:
        self.sc, self.phase, self.config, self.topic = sc, phase, config, topic
        units = sc.units(phase)
        self.per_record = units / phase.expect.records if phase.expect.records else 0.0
        self.done_before = done_before
        self.units = units
        self.sent = 0
        self.finished = threading.Event()
        self.overloaded = threading.Event()
        self.error: Exception | None = None
        self.stats: dict[str, float] = {}

    def run(self) -> None:
        ends, count = [], 0
        for block in self.phase.blocks:
            count += block.records
            ends.append(count)
        try:
            st = produce(
                self.config,
                self.topic,
                self.phase.records,
                rate=self.phase.rate,
                on_progress=self._sent,
                stop=self.overloaded.is_set,
                boundaries=ends,
            )
            self.stats = {"started": st.started, "rate": st.rate, "behind_ms": st.behind_max_ms}
            self.units = self.sc.units_of(self.phase.truncated(st.records))
            self.sent = st.records
        except Exception as error:  # surfaced by the runner
            self.error = error
        finally:
            self.finished.set()

    def _sent(self, n: int) -> None:
        self.sent += n

    def reached(self, done: float) -> bool:
        if self.error is not None:
            return True
        rate = self.phase.rate
        lag = self.sent * self.per_record - (done - self.done_before)
        if rate and lag > rate * self.per_record * MAX_LAG_S:
            self.overloaded.set()
        return self.finished.is_set() and done - self.done_before >= self.units
