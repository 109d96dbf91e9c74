"""Run one scenario: a fresh broker, the flow as N processes, phases of load, the readings.

A scenario is a flow (``null``, ``orchestrate`` with instant providers, ``e2e`` with the real
connectors against the local stubs), a process and partition count and a list of phases. A
backlog phase is produced before the flow starts (throughput: the flow drains it as fast as
it can); a later phase is produced while it runs, as fast as possible or open loop at a rate
(latency). A phase is complete when the processes have counted the terminal outcomes it
should produce (``/metrics``), never when a watermark is reached. CPU is read from ``/proc``
per process over each phase; the events and DLQ topics are read afterwards to check counts
and compute latencies.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from rich.progress import Progress, TaskID

from benchmarks import stages
from benchmarks.cluster import FlowCluster, flow_env
from benchmarks.monitor import Feed, Poll
from benchmarks.outcomes import rates, verify
from benchmarks.procstat import MachineWatch, ProcWatch, scrape, total
from benchmarks.producer import produce
from benchmarks.scenario import Scenario, ScenarioFailed
from benchmarks.stubs import StubProcess
from notiflow.kafka.admin import ensure_topics
from notiflow.kafka.broker import EmbeddedBroker
from notiflow.settings import Settings

#: Pause between a backlog (warm-up) phase and an open-loop phase, so that open-loop latency
#: measures the steady state, not requests queued behind the warm-up's last batches.
SETTLE_S = 2.0


class Bench:
    """Runs scenarios against shared stubs, reporting progress to a rich ``Progress``."""

    def __init__(
        self,
        results: Path,
        progress: Progress,
        stubs: dict[str, StubProcess] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.results, self.progress = results, progress
        self.stubs = stubs or {}
        self.env = env or {}

    def run(self, sc: Scenario) -> dict[str, Any]:
        """Run ``sc`` and return its result (see ``report`` for the shape)."""
        s = Settings()
        task = self.progress.add_task(sc.name, total=sum(sc.units(p) for p in sc.phases))
        try:
            with EmbeddedBroker() as broker:
                return self._run(sc, s, broker, task)
        finally:
            self.progress.remove_task(task)

    def _run(self, sc: Scenario, s: Settings, broker: EmbeddedBroker, task: TaskID) -> dict:
        config = {"bootstrap.servers": broker.bootstrap}
        ensure_topics(config, s.flow_topics, sc.partitions)
        backlog = {}
        for phase in (p for p in sc.phases if p.backlog):
            self.progress.update(task, description=f"{sc.name}: producing {phase.name}")
            stats = produce(config, s.requests_topic, phase.records)
            backlog[phase.name] = {"records": stats.records, "rate": round(stats.rate)}
        env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, **self.env, **sc.env}
        if "smtp" in self.stubs:
            env["NOTIFLOW_SMTP_HOST"] = "127.0.0.1"
            env["NOTIFLOW_SMTP_PORT"] = str(self.stubs["smtp"].port)
        before = {kind: stub.count() for kind, stub in self.stubs.items()}
        logs = self.results / "logs"
        with FlowCluster(sc.flow, sc.processes, flow_env(env), logs, sc.name) as cluster:
            broker_pid = broker._process.pid if broker._process else 0
            watches = [ProcWatch(f"{sc.flow}-{i}", pid) for i, pid in enumerate(cluster.pids)]
            watches.append(ProcWatch("broker", broker_pid))
            watches += [ProcWatch(f"stub-{k}", stub.pid) for k, stub in self.stubs.items()]
            watches.append(ProcWatch("bench", os.getpid()))
            poll = Poll(cluster, sc.flow, lambda done: self.progress.update(task, completed=done))
            try:
                phases = self._phases(sc, cluster, poll, config, s.requests_topic, watches, task)
            except ScenarioFailed as error:
                raise ScenarioFailed(f"{sc.name}: {error} (logs in {logs})") from None
            if not poll.drained():
                raise ScenarioFailed(f"{sc.name}: outputs not acknowledged by Kafka in time")
            step_stats = stages.collect(cluster.api_ports)
            metrics = [scrape(port) for port in cluster.metrics_ports]
        received = {kind: stub.count() - before[kind] for kind, stub in self.stubs.items()}
        result: dict[str, Any] = {
            "name": sc.name,
            "flow": sc.flow,
            "processes": sc.processes,
            "partitions": sc.partitions,
            "backlog_produced": backlog,
            "phases": phases,
            "stages": step_stats,
            "stub_received": received if sc.flow == "e2e" else {},
            "series": poll.series,
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        }
        if sc.flow == "null":
            first = min(total(m, "notiflow_bench_null_first_seconds") or 1e18 for m in metrics)
            last = max(total(m, "notiflow_bench_null_last_seconds") for m in metrics)
            phases[0]["seconds"] = round(last - first, 3)
            phases[0]["terminal"] = sum(
                total(m, "notiflow_bench_null_items_total") for m in metrics
            )
            rates(phases[0])
        else:
            self.progress.update(task, description=f"{sc.name}: reading events")
            verify(config, s, phases, result)
        return result

    def _phases(
        self,
        sc: Scenario,
        cluster: FlowCluster,
        poll: Poll,
        config: dict,
        topic: str,
        watches: list[ProcWatch],
        task: TaskID,
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        target = 0.0
        for index, phase in enumerate(sc.phases):
            units = sc.units(phase)
            target += units
            done_before = poll.last
            self.progress.update(task, description=f"{sc.name}: {phase.name}")
            stats: dict[str, float] = {}
            producer = profiler = None
            feed = Feed(sc, phase, done_before, config, topic)
            if index and not phase.backlog and sc.phases[index - 1].backlog:
                time.sleep(SETTLE_S)  # let the warm-up's last batches and flushes finish
            if phase.backlog:
                started = poll.until(lambda done: done > poll.last)  # first output
            else:
                started = time.time()
                producer = threading.Thread(target=feed.run, daemon=True)
                producer.start()
            busy = MachineWatch()
            busy.start()
            for w in watches:
                w.start()
            # CPU is read from here: scale the records to what was left to do at this point
            left = 1 - (poll.last - done_before) / units if units else 0.0
            if index == 0 and sc.profile_s:
                profiler = self._profile(sc, cluster.pids[0])
            ended = poll.until(feed.reached if producer else lambda done, t=target: done >= t)
            for w in watches:
                w.stop()
            busy.stop()
            if producer is not None:
                producer.join()
                if feed.error is not None:
                    raise ScenarioFailed(f"producer: {feed.error}")
                target += feed.units - units  # less when stopped early
                stats = feed.stats
            expect = phase.truncated(feed.sent) if producer else phase.expect
            if profiler is not None:
                profiler.wait()
            wall = ended - started
            out.append(
                {
                    "name": phase.name,
                    "records": expect.records,
                    "expect": expect.as_dict(),
                    "offered_rate": phase.rate,
                    "overloaded": feed.overloaded.is_set(),
                    "producer": {k: round(v, 3) for k, v in stats.items()},
                    "start": stats.get("started", started),
                    "wall_s": round(wall, 3),
                    "cpu_records": round(expect.records * left),
                    "processes": [w.as_dict(wall) for w in watches],
                    "machine_busy_pct": busy.busy_pct,
                }
            )
        return out

    def _profile(self, sc: Scenario, pid: int) -> subprocess.Popen[bytes]:
        """py-spy on the first worker for ``profile_s`` (collapsed stacks, for ``profiling``)."""
        path = self.results / f"{sc.name}.pyspy.txt"
        args = ["py-spy", "record", "-p", str(pid), "-d", str(int(sc.profile_s)), "-r", "100"]
        args += ["--nonblocking", "-f", "raw", "-o", str(path)]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
