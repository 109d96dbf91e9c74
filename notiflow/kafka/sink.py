"""``KafkaProducerSink``: our own Bytewax output to one topic.

Bytewax's KafkaSink has no delivery callback and crashes on a full producer queue. This sink
uses an idempotent producer, waits for room when the local queue is full (backpressure rather
than a crash), checks every delivery report, re-sends failed deliveries and raises if they
still fail, so a lost write stops the flow loudly instead of vanishing. Each batch is flushed
before ``write_batch`` returns: output is at-least-once with respect to recovery snapshots.
Parallelism: one producer per worker (``DynamicSink``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

from notiflow import metrics
from notiflow.messages import OutMessage

logger = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 60.0
QUEUE_FULL_WAIT_S = 0.05
RESEND_ROUNDS = 3


class DeliveryFailed(RuntimeError):
    """Messages could not be written to Kafka after retries."""


class _ProducerPartition(StatelessSinkPartition[OutMessage]):
    def __init__(self, config: dict, topic: str) -> None:
        self._topic = topic
        self._producer = Producer(config)
        self._failed: list[tuple[OutMessage, KafkaError]] = []
        self._produced = metrics.MESSAGES_PRODUCED.labels(topic=topic)
        self._errors = metrics.PRODUCE_ERRORS.labels(topic=topic)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        """One callback for every message (no closure per message); a failed message is
        rebuilt from its delivery report for the re-send."""
        if error is not None:
            headers = tuple(message.headers() or ())
            self._failed.append((OutMessage(message.key(), message.value(), headers), error))

    def _produce(self, item: OutMessage) -> None:
        headers = list(item.headers) if item.headers else None
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    item.value,
                    item.key,
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:  # local queue full: serve callbacks, then try again
                metrics.PRODUCER_QUEUE_FULL.labels(topic=self._topic).inc()
                self._producer.poll(QUEUE_FULL_WAIT_S)

    def write_batch(self, items: Sequence[OutMessage]) -> None:
        for item in items:
            self._produce(item)
        for round_ in range(RESEND_ROUNDS + 1):
            remaining = self._producer.flush(FLUSH_TIMEOUT_S)
            if remaining:
                raise DeliveryFailed(f"{remaining} messages to {self._topic} not delivered")
            if not self._failed:
                break
            failed, self._failed = self._failed, []
            self._errors.inc(len(failed))
            logger.warning(
                "kafka delivery failed; re-sending",
                extra={"topic": self._topic, "count": len(failed), "error": str(failed[0][1])},
            )
            if round_ == RESEND_ROUNDS:
                raise DeliveryFailed(f"{len(failed)} messages to {self._topic}: {failed[0][1]}")
            for item, _error in failed:
                self._produce(item)
        self._produced.inc(len(items))

    def close(self) -> None:
        self._producer.flush(FLUSH_TIMEOUT_S)


class KafkaProducerSink(DynamicSink[OutMessage]):
    """Write ``OutMessage`` items to ``topic``. At-least-once; never drops silently."""

    def __init__(self, config: dict, topic: str, linger_ms: int = 5) -> None:
        self._config = {
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "compression.type": "lz4",
            **config,
        }
        self._topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(self._config, self._topic)
