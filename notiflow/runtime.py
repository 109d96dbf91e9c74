"""Per-process start-up shared by the flows: logging and the ops endpoint, once."""

from __future__ import annotations

import faulthandler
import os
import signal

from notiflow.logs import configure_logging
from notiflow.ops import serve_ops
from notiflow.settings import Settings

_initialised = False


def init_process(flow: str, settings: Settings) -> None:
    """Configure logging, start ``/metrics`` + ``/healthz`` and make SIGUSR1 dump every
    thread's stack to stderr (for diagnosing a stuck process). Idempotent."""
    global _initialised
    if _initialised:
        return
    _initialised = True
    process = int(os.environ.get("BYTEWAX_PROCESS_ID", "0"))
    configure_logging(settings.log_level, settings.log_format.value, flow=flow, process=process)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: dump stacks
    serve_ops(settings.metrics_host, settings.metrics_port, flow=flow, process=process)
