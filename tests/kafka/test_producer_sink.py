"""Our producer sink against the real broker: backpressure instead of a crash, errors loud."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from notiflow import metrics
from notiflow.kafka.admin import ensure_topics
from notiflow.kafka.reader import TopicReader
from notiflow.kafka.sink import DeliveryFailed, KafkaProducerSink
from notiflow.messages import OutMessage
from notiflow.netutil import free_port

REPO = Path(__file__).resolve().parents[2]


def test_full_queue_applies_backpressure_and_delivers_everything(kafka_config, topic_prefix):
    topic = f"{topic_prefix}sink"
    ensure_topics(kafka_config, [topic], partitions=3)
    sink = KafkaProducerSink({**kafka_config, "queue.buffering.max.messages": 10}, topic)
    part = sink.build_part("out", "0000", None)
    part.write_batch([OutMessage(f"k{i % 7}".encode(), b"v%d" % i) for i in range(2000)])
    part.close()
    reader = TopicReader(kafka_config, topic)
    assert reader.wait_for(2000, 30)
    assert sorted(m.value() for m in reader.messages) == sorted(b"v%d" % i for i in range(2000))
    reader.close()


def test_undeliverable_messages_raise_instead_of_vanishing():
    nobody = f"127.0.0.1:{free_port()}"  # no broker listens here
    sink = KafkaProducerSink({"bootstrap.servers": nobody, "message.timeout.ms": 500}, "t")
    part = sink.build_part("out", "0000", None)
    part.write_batch([OutMessage(None, b"lost?")])  # handed over: the epoch's end waits
    with pytest.raises(DeliveryFailed, match=r"not delivered|to t:"):
        part.snapshot()
    assert metrics.PRODUCE_ERRORS.labels(topic="t")._value.get() >= 1


def test_headers_are_written(kafka_config, topic_prefix):
    topic = f"{topic_prefix}headers"
    ensure_topics(kafka_config, [topic], partitions=1)
    part = KafkaProducerSink(kafka_config, topic).build_part("out", "0000", None)
    part.write_batch([OutMessage(b"k", b"v", (("notiflow-reason", b"why"),))])
    part.snapshot()
    reader = TopicReader(kafka_config, topic)
    assert reader.wait_for(1, 15)
    assert reader.messages[0].headers() == [("notiflow-reason", b"why")]
    reader.close()


_STOPPED_WRITER = """
import sys, time
from notiflow.kafka.sink import KafkaProducerSink
from notiflow.messages import OutMessage
from notiflow.runtime import init_process
from notiflow.settings import Settings

init_process("test", Settings(metrics_port=0))
config = {"bootstrap.servers": sys.argv[1], "linger.ms": 60_000}  # nothing leaves on its own
part = KafkaProducerSink(config, sys.argv[2]).build_part("out", "0000", None)
part.write_batch([OutMessage(None, b"m%d" % i) for i in range(100)])
print("handed over", flush=True)
while True:
    time.sleep(0.01)
"""


def test_sigterm_delivers_what_was_handed_over(kafka_config, topic_prefix):
    """A write returns before Kafka has the messages; a graceful stop must not lose them."""
    topic = f"{topic_prefix}sigterm"
    ensure_topics(kafka_config, [topic], partitions=1)
    bootstrap = kafka_config["bootstrap.servers"]
    writer = subprocess.Popen(
        [sys.executable, "-c", _STOPPED_WRITER, bootstrap, topic],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "handed over"
        writer.send_signal(signal.SIGTERM)
        assert writer.wait(30) == -signal.SIGTERM  # still dies of the signal, after the flush
    finally:
        writer.kill()
    reader = TopicReader(kafka_config, topic)
    assert reader.wait_for(100, 15)
    assert sorted(m.value() for m in reader.messages) == sorted(b"m%d" % i for i in range(100))
    reader.close()
