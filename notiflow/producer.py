"""Produce requests to the ingest topic (used by ``notiflow send``, the demo and tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from confluent_kafka import KafkaError, Producer

FLUSH_TIMEOUT_S = 60.0


class ProduceFailed(RuntimeError):
    pass


def produce_all(
    config: dict,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Produce every ``(key, value)``; wait for all acks; raise if any failed. Returns count."""
    producer = Producer({"enable.idempotence": True, "linger.ms": 5, **config})
    errors: list[KafkaError] = []
    sent = 0

    def on_delivery(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            errors.append(error)

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if on_progress and sent % 500 == 0:
            producer.poll(0)
            on_progress(500)
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    if on_progress:
        on_progress(sent % 500)
    if remaining or errors:
        raise ProduceFailed(f"{remaining} unacknowledged, {len(errors)} failed: {errors[:1]}")
    return sent
