"""``ChildProcessServer``: a stand-in run as a child process on a loopback port.

The lifecycle the process-based stand-ins share (``RedisServer``, ``ClickHouseHttpServer``):
pick a free port (a few attempts, as another process may take it first), spawn, wait until
``ping`` answers (bounded), stop with terminate-then-kill (bounded), and keep the work files
in a directory of one's own (a temporary one, removed on stop, unless ``data_dir`` is given).
Subclasses supply ``_spawn``, ``ping`` and the name of their log file.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from notiflow.netutil import free_port

log = logging.getLogger(__name__)


class ChildProcessServer:
    """Start/stop a child-process server; ``port`` is set once ``start()`` returns."""

    NAME: ClassVar[str] = "server"
    LOG_FILE: ClassVar[str] = "server.log"  # in the work directory; its tail explains failures
    START_TIMEOUT_S: ClassVar[float] = 10.0
    STOP_TIMEOUT_S: ClassVar[float] = 5.0
    BIND_ATTEMPTS: ClassVar[int] = 3
    POLL_S: ClassVar[float] = 0.02

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, data_dir: Path | None = None
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = port or 0
        self._data_dir = data_dir
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def workdir(self) -> Path:
        if self._data_dir is not None:
            return self._data_dir
        if self._tempdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix=f"notiflow-{self.NAME}-")
        return Path(self._tempdir.name)

    def start(self) -> Self:
        """Launch and wait until ``ping`` answers (bounded by START_TIMEOUT_S per attempt)."""
        if self._process is not None:
            return self
        workdir = self.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        detail = ""
        try:
            for attempt in range(1, (1 if self._requested_port else self.BIND_ATTEMPTS) + 1):
                self.port = self._requested_port or free_port(self.host)
                self._process = self._spawn(workdir)
                if self._wait_ready():
                    log.info("%s listening on %s:%s", self.NAME, self.host, self.port)
                    return self
                detail = self._terminate()
                log.debug("%s attempt %d failed: %s", self.NAME, attempt, detail)
            raise RuntimeError(f"{self.NAME} did not start on {self.host}:{self.port}: {detail}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate (then kill) the process and remove the temporary directory, if any."""
        self._terminate()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- for subclasses ----------------------------------------------------------------------
    def ping(self, timeout: float = 1.0) -> bool:
        raise NotImplementedError

    def _spawn(self, workdir: Path) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    # --- internals -----------------------------------------------------------------------
    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running:
                return False
            if self.ping(timeout=0.5):
                return True
            time.sleep(self.POLL_S)
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
        logfile = self.workdir / self.LOG_FILE
        if not logfile.is_file():
            return f"exit code {process.returncode}"
        return logfile.read_text(errors="replace")[-2000:]
