"""Local provider stand-ins in their own processes (so they do not share the flow's GIL).

``StubProcess("smtp")`` runs ``SmtpCatcher``, ``StubProcess("webhook")`` a
``WebhookReceiver`` (signatures checked lazily, with the engine's default secret). The child
is ``python -m benchmarks.stubs KIND``: it prints its port, then answers each ``count`` line
on stdin with how many messages (SMTP) or 2xx requests (webhook) it has received, and exits
at end of input. ``NOTIFLOW_BENCH_SMTP_PIPELINING=0`` in the benchmark's environment makes
the SMTP stub offer no PIPELINING (to measure what pipelining changes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import TracebackType

from benchmarks.cluster import REPO

KINDS = ("smtp", "webhook")
STOP_TIMEOUT_S = 5.0


def serve(kind: str) -> None:
    """Child: run the server and answer ``count`` lines until stdin closes."""
    from notiflow.devservices import SmtpCatcher, WebhookReceiver
    from notiflow.settings import Settings

    secret = Settings.model_fields["webhook_secret"].default
    pipelining = os.environ.get("NOTIFLOW_BENCH_SMTP_PIPELINING", "1") != "0"
    server = (
        SmtpCatcher(pipelining=pipelining) if kind == "smtp" else WebhookReceiver(secret=secret)
    )
    with server:
        print(server.port, flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                print(server.count, flush=True)


class StubProcess:
    """One stand-in server in a child process. Context manager."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown stub {kind!r}")
        self.kind = kind
        self.port = 0
        self._child: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        return self._child.pid if self._child else 0

    def start(self) -> StubProcess:
        self._child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.stubs", self.kind],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._child.stdout.readline() if self._child.stdout else ""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"{self.kind} stub did not start")
        self.port = int(line)
        return self

    def count(self) -> int:
        """Messages (SMTP) or 2xx requests (webhook) received so far."""
        if self._child is None or self._child.stdin is None or self._child.stdout is None:
            raise RuntimeError(f"{self.kind} stub is not running")
        self._child.stdin.write("count\n")
        self._child.stdin.flush()
        return int(self._child.stdout.readline())

    def url(self, path: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def __enter__(self) -> StubProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    serve(sys.argv[1])
