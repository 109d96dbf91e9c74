"""Helpers for end-to-end tests: follow topics and the analytics process."""

from __future__ import annotations

import time
from collections import Counter

import orjson

from notiflow.kafka.reader import TopicReader
from notiflow.ops import read_metric

FINAL = {"sent", "failed", "dead_lettered", "deduplicated", "rejected"}


def wait_for_finals(
    reader: TopicReader, expected: int, timeout: float, engine=None
) -> Counter[str]:
    """Read events until ``expected`` final outcomes were seen; return status counts.

    With ``engine``, fail at once if one of its processes has exited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine is not None and engine.poll():
            raise AssertionError(f"engine process exited: {engine.poll()}")
        reader.poll(0.2)
        statuses = Counter(orjson.loads(m.value())["status"] for m in reader.messages)
        if sum(n for s, n in statuses.items() if s in FINAL) >= expected:
            return statuses
    return Counter(orjson.loads(m.value())["status"] for m in reader.messages)


def wait_for_rows(metrics_port: int, rows: int, timeout: float) -> float:
    """Wait until the analytics process reports ``rows`` inserted; returns the last figure."""
    deadline = time.monotonic() + timeout
    seen = 0.0
    while time.monotonic() < deadline:
        seen = read_metric(metrics_port, "notiflow_clickhouse_rows_total")
        if seen >= rows:
            break
        time.sleep(0.2)
    return seen
