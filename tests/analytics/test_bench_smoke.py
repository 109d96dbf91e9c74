"""The analytics benchmark's smoke mode still runs (sink path, tiny sizes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_analytics_bench_quick_sink() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/analytics_bench.py", "--quick", "--skip-flow"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "rows/s" in done.stdout and "20,000 events" in done.stdout
