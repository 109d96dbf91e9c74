"""Read what a run produced (events and DLQ topics) and turn it into counts and latencies.

Completion is the count of terminal events we expect, never the topic's watermark (Tansu's
can lag the last batch). Latency is per ``sent`` event: the event message's Kafka timestamp
(when the sink produced it) minus ``requested_at`` (the request's Kafka timestamp).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks.loadgen import TERMINAL
from notiflow.kafka.admin import partition_count
from notiflow.settings import Settings

QUIET_S = 1.0
READ_TIMEOUT_S = 300.0
#: Statuses of a notification held back on purpose (its events precede its ``sent``: same key).
HELD = frozenset({"scheduled", "held_quiet_hours", "deferred"})


@dataclass
class Window:
    """Events whose request time falls in ``[start_ms, end_ms)``."""

    name: str
    start_ms: float
    end_ms: float
    terminal: int = 0
    first_ms: float = float("inf")
    last_ms: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return max(0.0, (self.last_ms - self.first_ms) / 1000)


@dataclass
class Outcomes:
    statuses: Counter[str] = field(default_factory=Counter)
    channels: Counter[str] = field(default_factory=Counter)  # "channel:status", terminal only
    events: int = 0
    dlq: int = 0
    dlq_kinds: Counter[str] = field(default_factory=Counter)
    #: notifications held on purpose (scheduled, quiet hours, deferred): their ``sent``
    #: latency is the hold, not the engine's, so it is left out of the percentiles
    held: set[str] = field(default_factory=set)

    @property
    def terminal(self) -> int:
        return sum(n for status, n in self.statuses.items() if status in TERMINAL)


def _consumer(config: dict, topic: str) -> Consumer:
    consumer = Consumer(
        {
            **config,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    parts = partition_count(config, topic)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(parts)])
    return consumer


def _ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


def read_events(
    config: dict, topic: str, expected_terminal: int, windows: list[Window], timeout: float
) -> Outcomes:
    """Consume ``topic`` until ``expected_terminal`` terminal events and a quiet second."""
    out = Outcomes()
    consumer = _consumer(config, topic)
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, 0.2)
            if batch:
                last_new = time.monotonic()
            elif out.terminal >= expected_terminal and time.monotonic() - last_new > QUIET_S:
                break
            for message in batch:
                if message.error() is not None:
                    continue
                _count(out, orjson.loads(message.value()), message.timestamp()[1], windows)
    finally:
        consumer.close()
    return out


def _count(out: Outcomes, event: dict, stamp_ms: int, windows: list[Window]) -> None:
    status = event["status"]
    out.events += 1
    out.statuses[status] += 1
    requested = _ms(event["requested_at"])
    window = next((w for w in windows if w.start_ms <= requested < w.end_ms), None)
    if window is not None:
        window.first_ms = min(window.first_ms, stamp_ms)
    if status in HELD:
        out.held.add(event["notification_id"])
    if status not in TERMINAL:
        return
    out.channels[f"{event['channel'] or '-'}:{status}"] += 1
    if window is not None:
        window.terminal += 1
        window.last_ms = max(window.last_ms, stamp_ms)
        on_purpose = event["category"] == "digest" or event["notification_id"] in out.held
        if status == "sent" and not on_purpose:
            window.latencies_ms.append(stamp_ms - requested)


def read_dlq(config: dict, topic: str, expected: int, timeout: float) -> tuple[int, Counter[str]]:
    """DLQ messages and their kinds (``notiflow-kind`` header), until ``expected`` + quiet."""
    kinds: Counter[str] = Counter()
    consumer = _consumer(config, topic)
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, 0.2)
            if batch:
                last_new = time.monotonic()
            elif sum(kinds.values()) >= expected and time.monotonic() - last_new > QUIET_S:
                break
            for message in batch:
                if message.error() is None:
                    headers = dict(message.headers() or ())
                    kinds[(headers.get("notiflow-kind") or b"?").decode()] += 1
    finally:
        consumer.close()
    return sum(kinds.values()), kinds


def percentiles(values: list[float]) -> dict[str, float | int]:
    """p50/p95/p99/max (nearest rank) and the count."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": ordered[-1],
        "mean": round(sum(ordered) / len(ordered), 1),
    }


def rates(phase: dict[str, Any]) -> None:
    seconds = phase.get("seconds") or phase["wall_s"]
    phase["records_per_s"] = round(phase["records"] / seconds) if seconds else 0
    phase["outcomes_per_s"] = round(phase["expect"]["units"] / seconds) if seconds else 0


def verify(config: dict, s: Settings, phases: list[dict], result: dict) -> None:
    """Read the events and DLQ topics: counts per status, per-phase windows and latency."""
    starts = [int(p["start"] * 1000) for p in phases]  # as the producer stamps them
    ends = [*starts[1:], float("inf")]
    windows = [Window(p["name"], 0 if i == 0 else starts[i], ends[i]) for i, p in enumerate(phases)]
    units = sum(p["expect"]["units"] for p in phases)
    out = read_events(config, s.events_topic, units, windows, READ_TIMEOUT_S)
    expected_dlq = sum(out.statuses[k] for k in ("rejected", "dead_lettered", "failed"))
    dlq, kinds = read_dlq(config, s.dlq_topic, expected_dlq, READ_TIMEOUT_S / 5)
    for phase, window in zip(phases, windows, strict=True):
        phase["terminal"] = window.terminal
        phase["seconds"] = round(window.seconds, 3)
        phase["latency_ms"] = percentiles(window.latencies_ms)
        phase["latencies_ms"] = window.latencies_ms
        rates(phase)
    result["events"] = {
        "total": out.events,
        "terminal": out.terminal,
        "statuses": dict(out.statuses),
        "channels": dict(out.channels),
        "dlq": dlq,
        "dlq_kinds": dict(kinds),
    }
