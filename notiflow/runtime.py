"""Per-process start-up shared by the flows: logging and the ops endpoint, once."""

from __future__ import annotations

import faulthandler
import gc
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
    tune_gc(settings.gc_gen0_threshold)


def tune_gc(gen0_threshold: int) -> None:
    """Fewer, cheaper garbage collections: the flows allocate many short-lived dicts (a
    collection every 700 allocations by default) while holding a large, long-lived heap
    (per-user state) that each full collection walks, a pause in the latency tail. Objects
    alive at start-up (modules, config) are frozen out of collection."""
    gc.freeze()
    if gen0_threshold > 0:
        _gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
