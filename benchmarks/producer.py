"""Produce generated records to a topic: as fast as possible, or open loop at a rate."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, Producer

from benchmarks.loadgen import Record

FLUSH_TIMEOUT_S = 60.0
WARM_S = 0.5  # open loop: time for the producer to be ready before the first record is due


@dataclass
class ProduceStats:
    records: int
    started: float  # epoch seconds; open loop: record i was due at started + i / rate
    seconds: float
    behind_max_ms: float = 0.0  # open loop: worst lag behind the schedule

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


class ProduceFailed(RuntimeError):
    pass


def produce(
    config: dict,
    topic: str,
    records: Sequence[Record],
    *,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
    boundaries: Sequence[int] = (),
) -> ProduceStats:
    """Produce ``records``; as fast as possible, or open loop at ``rate`` per second.

    Open loop: record ``i`` is due at ``t0 + i / rate`` and carries that time as its Kafka
    timestamp whether or not the producer kept up. Once ``stop()`` is true, production ends
    at the next of ``boundaries`` (record indexes; block ends keep a workload whole). Waits
    for every acknowledgement.
    """
    ends = sorted(boundaries)
    limit = len(records)
    linger = 1 if rate else 20
    producer = Producer({"enable.idempotence": True, "linger.ms": linger, **config})
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            errors.append(error)

    if rate:  # connect and fetch metadata before the clock starts: not the engine's latency
        producer.list_topics(topic, timeout=FLUSH_TIMEOUT_S)
        time.sleep(WARM_S)  # the idempotent producer's id is requested once connected
    start = time.time()
    behind = 0.0
    sent = 0
    while sent < limit:
        if stop is not None and limit == len(records) and stop():
            limit = next((end for end in ends if end >= sent), len(records))
            continue
        if rate:
            now = time.time()
            due = min(limit, int((now - start) * rate) + 1)
            if due <= sent:
                time.sleep(min(0.001, (sent + 1) / rate - (now - start)))
                continue
            behind = max(behind, (now - start - sent / rate) * 1000)
        else:
            due = min(limit, sent + 5000)
        for i in range(sent, due):
            key, value = records[i]
            stamp = int((start + i / rate) * 1000) if rate else 0
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=key, timestamp=stamp, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.poll(0)
        if on_progress:
            on_progress(due - sent)
        sent = due
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    if remaining or errors:
        raise ProduceFailed(f"{remaining} unacknowledged, {len(errors)} failed: {errors[:1]}")
    return ProduceStats(sent, start, time.time() - start, behind)
