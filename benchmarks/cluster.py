"""Start the flow under test as N Bytewax processes (``-i/-a``), like ``notiflow.engine``.

Only the flow: no analytics process and no ClickHouse, so the measurement is the
orchestration path alone. Each process gets its own ``/metrics`` port (``NOTIFLOW_METRICS_PORT``)
and Bytewax's own API port (per-step durations and item counts). Inherited notiflow settings
are dropped from the environment so a developer's ``.env`` cannot skew a run; pass overrides
explicitly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from notiflow.netutil import free_port, free_port_block
from notiflow.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TARGETS = {
    "null": "benchmarks.null_flow:build_flow()",
    "orchestrate": "benchmarks.targets:orchestrate()",
    "e2e": "benchmarks.targets:e2e()",
}
_DROP = ("NOTIFLOW_", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CLICKHOUSE_URL", "BYTEWAX_")
STOP_TIMEOUT_S = 10.0


def flow_env(overrides: dict[str, str]) -> dict[str, str]:
    """The parent environment without notiflow/Bytewax settings, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
    env.update({"NOTIFLOW_LOG_LEVEL": "WARNING", **overrides})
    return env


class FlowCluster:
    """``processes`` Bytewax processes running ``TARGETS[flow]``. Context manager."""

    def __init__(
        self, flow: str, processes: int, env: dict[str, str], log_dir: Path, name: str
    ) -> None:
        self.flow, self.processes = flow, processes
        self.env, self.log_dir, self.name = env, log_dir, name
        self.metrics_ports: list[int] = []
        self.api_ports: list[int] = []
        self.children: list[subprocess.Popen[bytes]] = []

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self.children]

    def start(self) -> FlowCluster:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        metrics = free_port_block(self.processes)
        api = free_port_block(self.processes, start=40_000, stop=50_000)
        self.metrics_ports = [metrics + i for i in range(self.processes)]
        self.api_ports = [api + i for i in range(self.processes)]
        cluster = [free_port() for _ in range(self.processes)]
        addresses = ";".join(f"127.0.0.1:{p}" for p in cluster)
        for index in range(self.processes):
            epoch = self.env.get("NOTIFLOW_SNAPSHOT_INTERVAL_SECONDS") or str(
                Settings.model_fields["snapshot_interval_seconds"].default
            )
            args = [sys.executable, "-m", "bytewax.run", TARGETS[self.flow], "-s", epoch]
            env = {
                **self.env,
                "NOTIFLOW_METRICS_PORT": str(self.metrics_ports[index]),
                "BYTEWAX_DATAFLOW_API_ENABLED": "1",
                "BYTEWAX_DATAFLOW_API_PORT": str(self.api_ports[index]),
            }
            if self.processes > 1:
                args += ["-i", str(index), "-a", addresses]
                env["BYTEWAX_PROCESS_ID"] = str(index)
            log = (self.log_dir / f"{self.name}-{index}.log").open("wb")
            self.children.append(
                subprocess.Popen(
                    args, env=env, cwd=REPO, stdout=log, stderr=log, start_new_session=True
                )
            )
            log.close()
        return self

    def poll(self) -> str | None:
        """Which process exited, if any (a flow under test must not exit)."""
        for index, child in enumerate(self.children):
            if child.poll() is not None:
                return f"{self.name}-{index} exited with {child.returncode}"
        return None

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        self.children.clear()

    def __enter__(self) -> FlowCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
