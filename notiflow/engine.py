"""``Engine``: runs notiflow — the broker (embedded if none is configured), topics, schema,
N orchestration processes (one Bytewax cluster via ``-i/-a``) and one analytics process.

Child processes get their configuration through the environment, like any deployment. If a
child exits unexpectedly the engine stops the rest and reports it, so a process supervisor
(systemd, Kubernetes, compose ``restart:``) can restart the whole set.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import orjson

from notiflow import clickhouse
from notiflow.kafka.admin import ensure_topics
from notiflow.kafka.broker import EmbeddedBroker
from notiflow.netutil import free_port
from notiflow.settings import Settings

logger = logging.getLogger(__name__)

BROKER_FILE = "broker.json"
STOP_TIMEOUT_S = 10.0


def broker_file(settings: Settings) -> Path:
    """Where a running engine records its embedded broker address (for ``notiflow send``)."""
    return settings.data_dir / BROKER_FILE


def resolve_bootstrap(settings: Settings) -> str | None:
    """Configured bootstrap servers, else the embedded broker of a running engine."""
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    path = broker_file(settings)
    if path.is_file():
        return orjson.loads(path.read_bytes())["bootstrap"]
    return None


class Engine:
    """Start, watch and stop the notiflow processes. Context manager."""

    def __init__(self, settings: Settings, processes: int | None = None) -> None:
        self.settings = settings
        self.processes = processes or settings.processes
        self.broker: EmbeddedBroker | None = None
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.bootstrap = settings.kafka_bootstrap_servers

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Engine:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.bootstrap:
            self.broker = EmbeddedBroker().start()
            self.bootstrap = self.broker.bootstrap
            broker_file(s).write_bytes(orjson.dumps({"bootstrap": self.bootstrap}))
        kafka = {**s.kafka_config(), "bootstrap.servers": self.bootstrap}
        if s.create_topics:
            ensure_topics(
                kafka,
                s.flow_topics,
                s.partitions,
                s.replication_factor,
            )
        client = clickhouse.connect(s)
        try:
            applied = clickhouse.migrate(client, s.clickhouse_database)
        finally:
            client.close()
        logger.info(
            "engine starting",
            extra={"bootstrap": self.bootstrap, "processes": self.processes, "migrations": applied},
        )
        self._spawn_orchestrators()
        self._spawn(
            "analytics", "flows.analytics:build_flow()", 0, None, self._metrics_port(self.processes)
        )
        return self

    def _metrics_port(self, index: int) -> int:
        return 0 if self.settings.metrics_port == 0 else self.settings.metrics_port + index

    def _spawn_orchestrators(self) -> None:
        base = self.settings.cluster_base_port
        ports = [base + i if base else free_port() for i in range(self.processes)]
        addresses = ";".join(f"127.0.0.1:{p}" for p in ports) if self.processes > 1 else None
        for index in range(self.processes):
            self._spawn(
                f"orchestrate-{index}",
                "flows.orchestrate:build_flow()",
                index,
                addresses,
                self._metrics_port(index),
            )

    def _spawn(
        self, name: str, target: str, index: int, addresses: str | None, metrics_port: int
    ) -> None:
        s = self.settings
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap or "",
            "NOTIFLOW_METRICS_PORT": str(metrics_port),
        }
        args = [sys.executable, "-m", "bytewax.run", target]
        if addresses:
            args += ["-i", str(index), "-a", addresses]
            env["BYTEWAX_PROCESS_ID"] = str(index)
        if s.recovery_dir:
            flow_dir = s.recovery_dir / name.split("-")[0]
            self.init_recovery(flow_dir, self.processes if addresses else 1)
            args += ["-r", str(flow_dir), "-b", "0"]  # local SQLite: no backup to wait for
        args += ["-s", str(s.snapshot_interval_seconds)]  # the epoch, with or without recovery
        process = subprocess.Popen(args, env=env, start_new_session=True)
        self.children.append((name, process))
        logger.info(
            "process started",
            extra={"name": name, "pid": process.pid, "metrics_port": metrics_port},
        )

    @staticmethod
    def init_recovery(directory: Path, partitions: int) -> None:
        """Create Bytewax's SQLite recovery partitions unless they exist."""
        if directory.exists() and any(directory.glob("*.sqlite3")):
            return
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "bytewax.recovery", str(directory), str(partitions)],
            check=True,
            capture_output=True,
        )

    def poll(self) -> str | None:
        """Name of a child that has exited, if any."""
        for name, process in self.children:
            if process.poll() is not None:
                return f"{name} (exit code {process.returncode})"
        return None

    def wait(self) -> int:
        """Block until a child exits or SIGINT/SIGTERM; then stop everything."""
        stopping = False

        def request_stop(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        exited = None
        while not stopping and exited is None:
            time.sleep(0.2)
            exited = self.poll()
        if exited:
            logger.error("process exited; stopping the engine", extra={"process": exited})
        self.stop()
        return 1 if exited else 0

    def stop(self) -> None:
        for _name, process in self.children:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for _name, process in self.children:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.children.clear()
        if self.broker:
            self.broker.stop()
            broker_file(self.settings).unlink(missing_ok=True)
            self.broker = None

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
