"""The template rendering benchmark, smoke mode (no timing assertions)."""

from __future__ import annotations

import re

import pytest

from benchmarks.templates_bench import CHANNELS, main


def test_templates_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(CHANNELS)
    for line in lines:
        cost = float(re.search(r": ([\d.]+) µs per render", line).group(1))  # type: ignore[union-attr]
        assert cost > 0
