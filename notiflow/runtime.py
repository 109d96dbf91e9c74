"""Per-process start-up shared by the flows: logging and the ops endpoint, once."""

from __future__ import annotations

import atexit
import faulthandler
import gc
import logging
import os
import signal
import sys
import time

from notiflow import metrics
from notiflow.logs import configure_logging
from notiflow.ops import serve_ops
from notiflow.settings import Settings

logger = logging.getLogger(__name__)

SLOW_COLLECTION_S = 0.05
_initialised = False


def init_process(flow: str, settings: Settings) -> None:
    """Configure logging, start ``/metrics`` + ``/healthz`` and make SIGUSR1 dump every
    thread's stack to stderr (for diagnosing a stuck process). Idempotent."""
    global _initialised
    if _initialised:
        return
    _initialised = True
    process = process_index()
    configure_logging(settings.log_level, settings.log_format.value, flow=flow, process=process)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: dump stacks
    serve_ops(settings.metrics_host, settings.metrics_port, flow=flow, process=process)
    tune_gc(settings.gc_gen0_threshold)


def process_index() -> int:
    """This process's index among the flow's processes (``bytewax.run -i``), 0 when alone.

    The launchers (``notiflow run``, the benchmarks) set ``BYTEWAX_PROCESS_ID`` beside
    ``-i``; a hand-written ``-i N`` on the command line is read too."""
    value = os.environ.get("BYTEWAX_PROCESS_ID")
    if value is None:
        for flag in ("-i", "--process-id"):
            if flag in sys.argv[:-1]:
                value = sys.argv[sys.argv.index(flag) + 1]
    return int(value) if value else 0


def snapshots_discarded(settings: Settings) -> bool:
    """True only when this process is a ``bytewax.run`` whose command line and environment
    name no recovery directory and ``NOTIFLOW_RECOVERY_DIR`` is unset: Bytewax then still asks
    every key touched in an epoch for a snapshot and throws it away, so a flow may skip
    building it. Any other way of running (``cli_main`` or ``run_main`` from Python, whose
    recovery configuration is not visible here) keeps the snapshots."""
    if settings.recovery_dir is not None or os.environ.get("BYTEWAX_RECOVERY_DIRECTORY"):
        return False
    argv = sys.argv
    if not argv or not argv[0].replace("\\", "/").endswith("bytewax/run.py"):
        return False
    return not any(_names_recovery(arg) for arg in argv[1:])


def _names_recovery(arg: str) -> bool:
    """``-r DIR``, ``-rDIR``, ``--recovery-directory[=DIR]``."""
    return arg.startswith(("--recovery-directory", "-r"))


def tune_gc(gen0_threshold: int) -> None:
    """Fewer, cheaper garbage collections: the flows allocate many short-lived dicts (a
    collection every 700 allocations by default) while holding a large, long-lived heap
    (per-user state) that each full collection walks, a pause in the latency tail. Objects
    alive at start-up (modules, config) are frozen out of collection. Every collection's
    pause is exported (``notiflow_gc_pause_seconds``) and a slow one logged."""
    gc.freeze()
    if _time_collections not in gc.callbacks:
        gc.callbacks.append(_time_collections)
        atexit.register(_stop_timing)  # the last collections run after logging has closed
    if gen0_threshold > 0:
        _gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)


_collection_started = 0.0


def _stop_timing() -> None:
    if _time_collections in gc.callbacks:
        gc.callbacks.remove(_time_collections)


def _time_collections(phase: str, info: dict) -> None:
    """Export each collection's pause (``notiflow_gc_pause_seconds``)."""
    global _collection_started
    if phase == "start":
        _collection_started = time.perf_counter()
        return
    pause = time.perf_counter() - _collection_started
    metrics.child(metrics.GC_PAUSE, str(info["generation"])).observe(pause)
    if pause > SLOW_COLLECTION_S:
        logger.warning(
            "slow garbage collection",
            extra={"generation": info["generation"], "pause_ms": round(pause * 1000, 1)},
        )
