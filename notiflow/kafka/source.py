"""``KafkaRecordSource``: a Bytewax input that reads one topic, one partition per source part.

Partitions are the unit of parallelism: Bytewax spreads them over every worker of every
process. Offsets live in the Bytewax recovery snapshot (the resume state is the next offset to
read), so with recovery enabled processing is exactly-once for state and at-least-once for
output. Without recovery a partition starts at ``start_offset``.

Unlike bytewax's own KafkaSource, consumer errors never stop the flow and never vanish: each
becomes a ``SourceError`` item that the flow routes to the DLQ. An idle partition sleeps
briefly (``IDLE_WAIT``) instead of spinning a core, and consumer lag is exported per partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError

from notiflow import metrics
from notiflow.kafka.admin import partition_count

logger = logging.getLogger(__name__)

IDLE_WAIT = timedelta(milliseconds=5)
OUT_OF_RANGE_WAIT = timedelta(milliseconds=200)
OUT_OF_RANGE_RETRIES = 50  # ~10 s of re-seeking before treating the records as gone
LAG_REPORT_INTERVAL_S = 1.0


#: Decides from a record's headers (``None`` or name/value pairs) whether to read it.
HeaderFilter = Callable[[list[tuple[str, bytes]] | None], bool]


class Record(NamedTuple):
    """One consumed Kafka record (plain tuple: cheap to pickle between workers)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...]


class SourceError(NamedTuple):
    """A consumer error for one partition; routed to the DLQ with its reason."""

    topic: str
    partition: int
    offset: int
    reason: str


class _PartitionReader(StatefulSourcePartition[Record | SourceError, int]):
    def __init__(self, config: dict, topic: str, partition: int, offset: int, batch_size: int):
        self._topic = topic
        self._partition = partition
        self._next_offset = offset
        self._batch_size = batch_size
        self._awake_at: datetime | None = None
        self._lag_reported_at = 0.0
        self._out_of_range_count = 0
        self._hold_until: datetime | None = None
        self._consumer = Consumer(config)
        self._assignment = TopicPartition(topic, partition, offset)
        self._consumer.assign([self._assignment])
        self._lag_gauge = metrics.CONSUMER_LAG.labels(topic=topic, partition=str(partition))
        self.skip_before_ms: int | None = None  # records older than this are skipped
        self.accept: HeaderFilter | None = None  # records whose headers it refuses are skipped
        self.linger_s = 0.0  # hold a partial poll this long for more (0: never)
        self._held: list[Message] = []
        self._release_at = 0.0

    def next_batch(self) -> list[Record | SourceError]:
        messages = self._consumer.consume(self._batch_size - len(self._held), 0)
        if self.linger_s and (self._held or messages):
            messages = self._linger(messages)
            if messages is None:
                return []
        if not messages:
            now = datetime.now(UTC)
            self._awake_at = max(now + IDLE_WAIT, self._hold_until or now)
            self._report_lag()
            return []
        self._awake_at = None
        return self._records(messages)

    def _linger(self, messages: list[Message]) -> list[Message] | None:
        """Hold a partial poll up to ``linger_s`` (from its first message) for more: fewer,
        larger batches at moderate rates. ``None`` while holding; offsets advance only when
        the held messages are released, so a snapshot taken meanwhile re-reads them."""
        now = time.monotonic()
        if not self._held:
            self._release_at = now + self.linger_s
        self._held += messages
        if len(self._held) < self._batch_size and now < self._release_at:
            self._awake_at = datetime.now(UTC) + timedelta(seconds=self._release_at - now)
            return None
        held, self._held = self._held, []
        return held

    def _records(self, messages: list[Message]) -> list[Record | SourceError]:
        batch: list[Record | SourceError] = []
        topic, partition = self._topic, self._partition
        skip_before_ms, accept = self.skip_before_ms, self.accept
        make = tuple.__new__  # NamedTuple's own __new__ is Python code: ~4x slower
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == ConfluentKafkaError._PARTITION_EOF:
                    continue
                if error.code() == ConfluentKafkaError.OFFSET_OUT_OF_RANGE:
                    batch.extend(self._out_of_range())
                    break
                logger.error(
                    "kafka consumer error",
                    extra={
                        "error": str(error),
                        "code": error.code(),
                        "topic": topic,
                        "partition": partition,
                        "next_offset": self._next_offset,
                    },
                )
                metrics.SOURCE_ERRORS.labels(topic=topic).inc()
                batch.append(SourceError(topic, partition, self._next_offset, str(error)))
                continue
            offset = message.offset()
            self._next_offset = offset + 1
            self._out_of_range_count = 0
            timestamp = message.timestamp()[1]
            if skip_before_ms is not None and timestamp < skip_before_ms:
                continue
            headers = message.headers()
            if accept is not None and not accept(headers):
                continue
            batch.append(
                make(
                    Record,
                    (
                        topic,
                        partition,
                        offset,
                        message.key(),
                        message.value(),
                        timestamp,
                        tuple(headers) if headers else (),
                    ),
                )
            )
        self._report_lag()
        return batch

    def _out_of_range(self) -> list[SourceError]:
        """Our next offset is outside the log. A broker that lags (Tansu's reported end can
        trail the last batch) recovers within moments: re-seek to the same offset. If it
        persists the records are gone (retention): report it and go on from the earliest."""
        self._out_of_range_count += 1
        position = TopicPartition(self._topic, self._partition, self._next_offset)
        if self._out_of_range_count <= OUT_OF_RANGE_RETRIES:
            logger.warning(
                "offset out of range; seeking again",
                extra={
                    "topic": self._topic,
                    "partition": self._partition,
                    "next_offset": self._next_offset,
                },
            )
            self._consumer.seek(position)
            self._hold_until = datetime.now(UTC) + OUT_OF_RANGE_WAIT
            return []
        reason = (
            f"offset {self._next_offset} is no longer in the log (retention?); "
            "continuing from the earliest available record"
        )
        logger.error(
            "offset out of range; records lost upstream",
            extra={"topic": self._topic, "partition": self._partition, "reason": reason},
        )
        metrics.SOURCE_ERRORS.labels(topic=self._topic).inc()
        self._out_of_range_count = 0
        self._consumer.seek(TopicPartition(self._topic, self._partition, OFFSET_BEGINNING))
        return [SourceError(self._topic, self._partition, self._next_offset, reason)]

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_reported_at < LAG_REPORT_INTERVAL_S:
            return
        self._lag_reported_at = now
        _low, high = self._consumer.get_watermark_offsets(self._assignment, cached=True)
        if high >= 0 and self._next_offset >= 0:
            self._lag_gauge.set(max(0, high - self._next_offset))

    def next_awake(self) -> datetime | None:
        return self._awake_at

    def snapshot(self) -> int:
        return self._next_offset

    def close(self) -> None:
        self._consumer.close()


class KafkaRecordSource(FixedPartitionedSource[Record | SourceError, int]):
    """Read ``topic`` from Kafka; each partition is a Bytewax source part.

    :param config: librdkafka settings (bootstrap servers, security, ...).
    :param start_offset: ``"earliest"`` or ``"latest"`` for parts with no resume state.
    :param accept: optional predicate on a record's headers; records it refuses are skipped
        before they become items (their offsets still advance).
    :param linger_ms: hold a partial poll up to this long for more records (0: never).
    """

    def __init__(
        self,
        config: dict,
        topic: str,
        start_offset: str = "earliest",
        batch_size: int = 1000,
        accept: HeaderFilter | None = None,
        linger_ms: float = 0.0,
    ) -> None:
        self._config = dict(config)
        self._linger_s = linger_ms / 1000
        self._topic = topic
        self._start = OFFSET_BEGINNING if start_offset == "earliest" else OFFSET_END
        self._batch_size = batch_size
        self._accept = accept

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(partition_count(self._config, self._topic))]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PartitionReader:
        config = {
            "group.id": "notiflow-unused",  # offsets are in recovery snapshots, not a group
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "error",  # never jump silently: out-of-range is an error
            "fetch.wait.max.ms": 20,
            **self._config,
        }
        offset = self._start if resume_state is None else resume_state
        reader = _PartitionReader(config, self._topic, int(for_part), offset, self._batch_size)
        reader.accept = self._accept
        reader.linger_s = self._linger_s
        if resume_state is None and self._start == OFFSET_END:
            # "latest" also by time: some brokers (Tansu) answer ListOffsets with a wrong end,
            # which would replay the whole topic; records from before this start are skipped.
            reader.skip_before_ms = int(time.time() * 1000)
        return reader
