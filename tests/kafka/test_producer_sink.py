"""Our producer sink against the real broker: backpressure instead of a crash, errors loud."""

from __future__ import annotations

import pytest

from notiflow import metrics
from notiflow.kafka.admin import ensure_topics
from notiflow.kafka.reader import TopicReader
from notiflow.kafka.sink import DeliveryFailed, KafkaProducerSink
from notiflow.messages import OutMessage
from notiflow.netutil import free_port


def test_full_queue_applies_backpressure_and_delivers_everything(kafka_config, topic_prefix):
    topic = f"{topic_prefix}sink"
    ensure_topics(kafka_config, [topic], partitions=3)
    sink = KafkaProducerSink({**kafka_config, "queue.buffering.max.messages": 10}, topic)
    part = sink.build("out", 0, 1)
    part.write_batch([OutMessage(f"k{i % 7}".encode(), b"v%d" % i) for i in range(2000)])
    part.close()
    reader = TopicReader(kafka_config, topic)
    assert reader.wait_for(2000, 30)
    assert sorted(m.value() for m in reader.messages) == sorted(b"v%d" % i for i in range(2000))
    reader.close()


def test_undeliverable_messages_raise_instead_of_vanishing():
    nobody = f"127.0.0.1:{free_port()}"  # no broker listens here
    sink = KafkaProducerSink({"bootstrap.servers": nobody, "message.timeout.ms": 500}, "t")
    part = sink.build("out", 0, 1)
    with pytest.raises(DeliveryFailed, match=r"not delivered|to t:"):
        part.write_batch([OutMessage(None, b"lost?")])
    assert metrics.PRODUCE_ERRORS.labels(topic="t")._value.get() >= 1


def test_headers_are_written(kafka_config, topic_prefix):
    topic = f"{topic_prefix}headers"
    ensure_topics(kafka_config, [topic], partitions=1)
    part = KafkaProducerSink(kafka_config, topic).build("out", 0, 1)
    part.write_batch([OutMessage(b"k", b"v", (("notiflow-reason", b"why"),))])
    reader = TopicReader(kafka_config, topic)
    assert reader.wait_for(1, 15)
    assert reader.messages[0].headers() == [("notiflow-reason", b"why")]
    reader.close()
