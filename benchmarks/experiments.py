"""Candidate hot-path fixes, applied in the benchmark processes only, to measure their gain.

``NOTIFLOW_BENCH_EXPERIMENTS=breaker,...`` (passed with ``--set``) patches the named fixes in
before the flow is built. Nothing here changes the code base; each experiment is the change
suggested for the real module, so "before/after" can be measured in one run. Remove an
experiment once its fix has landed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from connectors import circuit


def _breaker() -> None:
    """``CircuitBreaker.record``: keep a running failure count instead of summing the window.

    The shipped version sums every call in the 30 s window on each record: O(window) per
    delivery, so the cost grows with throughput (quadratic overall).
    """

    def record(self: circuit.CircuitBreaker, failed: bool) -> None:
        with self._lock:
            now = self.clock()
            if self.state == circuit.HALF_OPEN:
                if failed:
                    self._open(now, "probe failed")
                else:
                    self._calls.clear()
                    self._move(circuit.CLOSED, "probe succeeded")
                return
            if self.state == circuit.OPEN:
                return
            failures = getattr(self, "_failures", 0) if self._calls else 0
            self._calls.append((now, failed))
            failures += failed
            horizon = now - self.policy.window_s
            while self._calls and self._calls[0][0] <= horizon:
                failures -= self._calls.popleft()[1]
            self._failures = failures  # type: ignore[attr-defined]
            total = len(self._calls)
            if total >= self.policy.min_calls and failures / total >= self.policy.failure_ratio:
                self._open(now, f"{failures}/{total} calls failed in {self.policy.window_s:g}s")

    circuit.CircuitBreaker.record = record  # type: ignore[method-assign]


def _iso() -> None:
    """``operators.events.iso_ms``: memoise (each note's ``requested_at`` is formatted for
    every event about it, and events of one batch share ``occurred_at`` milliseconds)."""
    from operators import events

    cached = functools.lru_cache(maxsize=65_536)(events.iso_ms)

    def iso_ms(epoch_ms: float) -> str:
        return cached(int(epoch_ms))  # the format keeps whole milliseconds anyway

    events.iso_ms = iso_ms


def _metrics() -> None:
    """``flows.steps.encode_event``: cache the labelled metric children per (channel, status)
    instead of ``labels()`` (a lock and a dict build) twice per event."""
    from flows import steps
    from notiflow import metrics
    from notiflow.messages import event_message

    children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def encode_event(event: dict[str, Any]) -> Any:
        key = (event["channel"] or "", event["status"])
        child = children.get(key)
        if child is None:
            labels = {"channel": key[0], "status": key[1]}
            child = children[key] = (
                metrics.OUTCOMES.labels(**labels),
                metrics.OUTCOME_LATENCY.labels(**labels),
            )
        child[0].inc()
        if key[1] in steps.FINAL_STATUSES:
            requested = datetime.fromisoformat(event["requested_at"]).timestamp()
            child[1].observe(max(0.0, time.time() - requested))
        return event_message(event)

    steps.encode_event = encode_event


def _sink() -> None:
    """``KafkaProducerSink``: one delivery callback per partition (not a closure per message);
    a failed message is rebuilt from the delivery report for the re-send."""
    from confluent_kafka import KafkaError, Message

    from notiflow import metrics
    from notiflow.kafka import sink
    from notiflow.messages import OutMessage

    def on_delivery(self: Any, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            headers = tuple(message.headers() or ())
            self._failed.append((OutMessage(message.key(), message.value(), headers), error))

    def produce(self: Any, item: OutMessage) -> None:
        callback = self.__dict__.get("_callback")
        if callback is None:
            callback = self._callback = functools.partial(on_delivery, self)
        headers = list(item.headers) if item.headers else None
        while True:
            try:
                self._producer.produce(
                    self._topic, item.value, item.key, headers=headers, on_delivery=callback
                )
                return
            except BufferError:
                metrics.PRODUCER_QUEUE_FULL.labels(topic=self._topic).inc()
                self._producer.poll(sink.QUEUE_FULL_WAIT_S)

    sink._ProducerPartition._produce = produce  # type: ignore[method-assign]


def _snapshot() -> None:
    """``flows.logic.UserLogic.snapshot``: skip pickling when recovery is off (Bytewax asks for
    a snapshot of every touched key at each epoch even then, and discards it)."""
    from flows import logic

    logic.UserLogic.snapshot = lambda self: None  # type: ignore[method-assign,assignment,return-value]


EXPERIMENTS: dict[str, Callable[[], None]] = {
    "breaker": _breaker,
    "iso": _iso,
    "metrics": _metrics,
    "sink": _sink,
    "snapshot": _snapshot,
}


def apply(names: str) -> list[str]:
    """Apply the comma-separated ``names``; returns what was applied."""
    applied = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
        EXPERIMENTS[name]()
        applied.append(name)
    return applied
