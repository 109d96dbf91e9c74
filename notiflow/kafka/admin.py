"""Topic creation. Tansu does not auto-create topics, and returns an empty config for topics
created without one (clients reading topic config can crash on it), so every topic is created
explicitly with its configs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

logger = logging.getLogger(__name__)

DEFAULT_TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
ADMIN_TIMEOUT_S = 30.0


def ensure_topics(
    config: Mapping[str, object],
    topics: Iterable[str],
    partitions: int,
    replication_factor: int = 1,
    topic_config: Mapping[str, str] = DEFAULT_TOPIC_CONFIG,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AdminClient(dict(config))
    existing = set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    wanted = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=dict(topic_config),
        )
        for name in topics
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=ADMIN_TIMEOUT_S).items():
        try:
            future.result(timeout=ADMIN_TIMEOUT_S)
            created.append(name)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    logger.info("topics created", extra={"topics": created, "partitions": partitions})
    return created


def partition_count(config: Mapping[str, object], topic: str) -> int:
    """Number of partitions of ``topic`` (raises when it does not exist)."""
    metadata = AdminClient(dict(config)).list_topics(topic, timeout=ADMIN_TIMEOUT_S)
    topic_meta = metadata.topics.get(topic)
    if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
        raise RuntimeError(
            f"topic {topic!r} does not exist (error: {topic_meta and topic_meta.error})"
        )
    return len(topic_meta.partitions)
