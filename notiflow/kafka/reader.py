"""``TopicReader``: read a whole topic from the beginning, incrementally (demo, tests, tools).

Assign-based (no consumer group join delay). Tansu's high watermark can lag the last batch,
so callers wait for the messages they expect rather than for "end of topic".
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from notiflow.kafka.admin import partition_count


class TopicReader:
    """Accumulates every message of ``topic`` in ``messages`` as ``poll`` is called."""

    def __init__(self, config: dict, topic: str) -> None:
        self.topic = topic
        self.messages: list[Message] = []
        self._consumer = Consumer(
            {
                **config,
                "group.id": f"notiflow-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        parts = partition_count(config, topic)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(parts)])

    def poll(self, timeout: float = 0.2, max_messages: int = 10_000) -> int:
        """Read what is available within ``timeout``; returns how many new messages."""
        batch = self._consumer.consume(max_messages, timeout)
        new = [m for m in batch if m.error() is None]
        self.messages.extend(new)
        return len(new)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Poll until at least ``count`` messages were read or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            self.poll()
        return len(self.messages) >= count

    def drain(self, quiet_s: float = 1.0, timeout: float = 30.0) -> None:
        """Poll until no new message arrives for ``quiet_s`` (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_new < quiet_s:
            if self.poll(0.1):
                last_new = time.monotonic()

    def close(self) -> None:
        self._consumer.close()
