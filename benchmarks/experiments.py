"""Candidate hot-path fixes, applied in the benchmark processes only, to measure their gain.

``NOTIFLOW_BENCH_EXPERIMENTS=breaker,...`` (passed with ``--set``) patches the named fixes in
before the flow is built. Nothing here changes the code base; each experiment is the change
suggested for the real module, so "before/after" can be measured in one run. Remove an
experiment once its fix has landed.
"""

from __future__ import annotations

from collections.abc import Callable

#: None at the moment: ``snapshot`` (no pickling of user state when recovery is off) landed
#: in session 4 as ``notiflow.runtime.snapshots_discarded``.
EXPERIMENTS: dict[str, Callable[[], None]] = {}


def apply(names: str) -> list[str]:
    """Apply the comma-separated ``names``; returns what was applied."""
    applied = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
        EXPERIMENTS[name]()
        applied.append(name)
    return applied
