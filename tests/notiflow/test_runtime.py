"""Per-process start-up: which process this is, and garbage-collection pauses measured."""

from __future__ import annotations

import gc
import sys

import pytest

from notiflow import metrics
from notiflow.runtime import process_index, snapshots_discarded, tune_gc
from notiflow.settings import Settings


def test_process_index_from_the_environment_or_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BYTEWAX_PROCESS_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["bytewax.run", "flows.orchestrate:build_flow()"])
    assert process_index() == 0
    monkeypatch.setattr(sys, "argv", ["bytewax.run", "f:flow", "-i", "3", "-a", "x;y;z;w"])
    assert process_index() == 3
    monkeypatch.setattr(sys, "argv", ["bytewax.run", "f:flow", "--process-id", "12"])
    assert process_index() == 12
    monkeypatch.setenv("BYTEWAX_PROCESS_ID", "1")
    assert process_index() == 1


def test_collections_are_timed_per_generation() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(0)
        tune_gc(0)  # idempotent: one callback
        assert sum(cb.__name__ == "_time_collections" for cb in gc.callbacks) == 1
        seen = _observations("2")
        gc.collect()
        assert _observations("2") == seen + 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _observations(generation: str) -> float:
    histogram = metrics.child(metrics.GC_PAUSE, generation)
    return sum(bucket.get() for bucket in histogram._buckets)


@pytest.mark.parametrize(
    ("argv", "env", "discarded"),
    [
        (["/x/site-packages/bytewax/run.py", "flows.orchestrate:build_flow()"], {}, True),
        (["/x/bytewax/run.py", "f:flow", "-i", "0", "-a", "a;b"], {}, True),
        (["/x/bytewax/run.py", "f:flow", "-r", "/tmp/rec", "-b", "0"], {}, False),
        (["/x/bytewax/run.py", "f:flow", "-r/tmp/rec"], {}, False),
        (["/x/bytewax/run.py", "f:flow", "--recovery-directory=/tmp/rec"], {}, False),
        (["/x/bytewax/run.py", "f:flow"], {"BYTEWAX_RECOVERY_DIRECTORY": "/tmp/rec"}, False),
        (["/x/bytewax/run.py", "f:flow"], {"NOTIFLOW_RECOVERY_DIR": "/tmp/rec"}, False),
        (["pytest", "tests"], {}, False),  # run from Python: recovery not visible, keep
    ],
)
def test_snapshots_are_skipped_only_when_bytewax_run_has_no_recovery(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], discarded: bool
) -> None:
    monkeypatch.delenv("BYTEWAX_RECOVERY_DIRECTORY", raising=False)
    monkeypatch.delenv("NOTIFLOW_RECOVERY_DIR", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", argv)
    assert snapshots_discarded(Settings()) is discarded
