"""Real services for the suite, each on a free loopback port, started and stopped here."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from flows.enrich import close_profile_stores
from notiflow.devservices import RedisServer
from notiflow.devservices.smtp_catcher import SmtpCatcher
from notiflow.devservices.webhook_receiver import WebhookReceiver
from notiflow.kafka.admin import ensure_topics
from notiflow.kafka.broker import EmbeddedBroker
from notiflow.netutil import free_port_block
from notiflow.settings import Settings

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (Tansu) for the whole session."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def kafka_config(broker: EmbeddedBroker) -> dict:
    return {"bootstrap.servers": broker.bootstrap}


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic namespace per test on the shared broker."""
    return f"t{next(_prefixes)}."


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, per test module. The process-wide
    profile stores the steps opened on it are closed before it stops (their listener threads
    would otherwise keep reconnecting, and log, after the session)."""
    with RedisServer() as server:
        yield server
        close_profile_stores()


@pytest.fixture
def smtp() -> Iterator[SmtpCatcher]:
    with SmtpCatcher() as catcher:
        yield catcher


@pytest.fixture
def hooks() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=Settings.model_fields["webhook_secret"].default) as receiver:
        yield receiver


@pytest.fixture
def engine_env(monkeypatch, tmp_path, broker, smtp, topic_prefix) -> dict[str, str]:
    """Environment for an engine run against the test broker and SMTP catcher."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "NOTIFLOW_TOPIC_PREFIX": topic_prefix,
        "NOTIFLOW_DATA_DIR": str(tmp_path / "data"),
        "NOTIFLOW_SMTP_HOST": smtp.host,
        "NOTIFLOW_SMTP_PORT": str(smtp.port),
        "NOTIFLOW_METRICS_PORT": str(free_port_block(4)),
        "NOTIFLOW_LOG_LEVEL": "WARNING",
        "NOTIFLOW_RETRY_BASE_DELAY_SECONDS": "0.05",
    }
    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def topics(kafka_config, topic_prefix) -> Settings:
    """Settings whose flow topics exist on the test broker."""
    settings = Settings(topic_prefix=topic_prefix)
    ensure_topics(kafka_config, settings.flow_topics, partitions=2)
    return settings
