"""Our Kafka source against the real broker: partitions, resume offsets, idle back-off."""

from __future__ import annotations

import time

from notiflow.kafka.admin import ensure_topics
from notiflow.kafka.source import KafkaRecordSource, Record
from notiflow.producer import produce_all


def _read(part, want: int, timeout: float = 15) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(part.next_batch())
    return got


def test_reads_each_partition_and_resumes_from_snapshot(kafka_config, topic_prefix):
    topic = f"{topic_prefix}src"
    ensure_topics(kafka_config, [topic], partitions=2)
    produce_all(kafka_config, topic, [(f"k{i}".encode(), b"%d" % i) for i in range(100)])
    source = KafkaRecordSource(kafka_config, topic, batch_size=10)
    assert source.list_parts() == ["0", "1"]
    records = []
    for part_name in source.list_parts():
        part = source.build_part("in", part_name, None)
        first = _read(part, 1)
        resume_at = part.snapshot()
        part.close()
        resumed = source.build_part("in", part_name, resume_at)
        rest = _read(resumed, 1)
        assert rest[0].offset == first[-1].offset + 1  # resumes exactly after the snapshot
        records += first
        while batch := resumed.next_batch():
            rest += batch
        records += rest
        resumed.close()
    assert sorted(int(r.value) for r in records) == list(range(100))
    assert all(isinstance(r.timestamp_ms, int) and r.timestamp_ms > 0 for r in records)


def test_idle_partition_schedules_a_wake_up_instead_of_spinning(kafka_config, topic_prefix):
    topic = f"{topic_prefix}idle"
    ensure_topics(kafka_config, [topic], partitions=1)
    part = KafkaRecordSource(kafka_config, topic).build_part("in", "0", None)
    assert part.next_batch() == []
    assert part.next_awake() is not None
    part.close()


def test_latest_start_offset_skips_existing_records(kafka_config, topic_prefix):
    topic = f"{topic_prefix}latest"
    ensure_topics(kafka_config, [topic], partitions=1)
    produce_all(kafka_config, topic, [(None, b"old")])
    part = KafkaRecordSource(kafka_config, topic, start_offset="latest").build_part("in", "0", None)
    time.sleep(0.5)
    assert _read(part, 1, timeout=1) == []
    produce_all(kafka_config, topic, [(None, b"new")])
    assert [r.value for r in _read(part, 1)] == [b"new"]
    part.close()


def test_linger_holds_a_partial_poll_without_advancing_the_snapshot(kafka_config, topic_prefix):
    topic = f"{topic_prefix}linger"
    ensure_topics(kafka_config, [topic], partitions=1)
    produce_all(kafka_config, topic, [(None, b"%d" % i) for i in range(3)])
    source = KafkaRecordSource(kafka_config, topic, batch_size=10, linger_ms=300)
    part = source.build_part("in", "0", None)
    start = part.snapshot()  # the "earliest" sentinel until a record is released
    held_from = time.monotonic()
    deadline = held_from + 10
    while not part._held and time.monotonic() < deadline:  # the broker's first fetch
        assert part.next_batch() == []
        held_from = time.monotonic()
    assert part.next_awake() is not None  # asleep until the linger ends, not spinning
    assert part.snapshot() == start  # nothing released: a snapshot now re-reads what is held
    got = _read(part, 3)
    assert time.monotonic() - held_from >= 0.25  # released after the linger, not before
    assert [r.value for r in got] == [b"0", b"1", b"2"] and part.snapshot() == 3
    part.close()


def test_linger_releases_a_full_batch_at_once(kafka_config, topic_prefix):
    topic = f"{topic_prefix}linger_full"
    ensure_topics(kafka_config, [topic], partitions=1)
    produce_all(kafka_config, topic, [(None, b"%d" % i) for i in range(20)])
    part = KafkaRecordSource(kafka_config, topic, batch_size=5, linger_ms=60_000).build_part(
        "in", "0", None
    )
    batches = []
    deadline = time.monotonic() + 10
    while sum(map(len, batches)) < 20 and time.monotonic() < deadline:
        if batch := part.next_batch():
            batches.append(batch)
    assert [len(b) for b in batches] == [5, 5, 5, 5]  # full batches never wait for the linger
    part.close()
