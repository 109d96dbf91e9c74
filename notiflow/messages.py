"""Output messages and dead letters as plain tuples (no Bytewax import)."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from operators.parse import Rejection

DLQ_HEADER_PREFIX = "notiflow-"


class OutMessage(NamedTuple):
    """A message to produce: key (partitioning), value and optional headers."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class DeadLetter(NamedTuple):
    """Something that could not be delivered, with its full context for inspection/replay."""

    kind: str
    reason: str
    key: str
    context: dict[str, Any]


#: Event headers: what a consumer needs to skip an event without parsing it (the flow's
#: strategy feedback reads only receipts and events of sequential/smart notifications).
STATUS_HEADER = "notiflow-status"
STRATEGY_HEADER = "notiflow-strategy"


def event_message(event: dict[str, Any]) -> OutMessage:
    """A delivery event, keyed by tenant/user so one user's events stay ordered."""
    key = f"{event['tenant_id']}/{event['user_id']}".encode()
    headers: tuple[tuple[str, bytes], ...] = ((STATUS_HEADER, event["status"].encode()),)
    if event.get("strategy"):
        headers += ((STRATEGY_HEADER, event["strategy"].encode()),)
    return OutMessage(key, orjson.dumps(event), headers)


def rejection_message(rejection: Rejection) -> OutMessage:
    """DLQ record for a malformed request: the original bytes as value, reason in headers."""
    topic, partition, offset = rejection.source.rsplit("/", 2)
    headers = (
        *rejection.headers,
        (f"{DLQ_HEADER_PREFIX}kind", rejection.kind.encode()),
        (f"{DLQ_HEADER_PREFIX}reason", rejection.reason.encode()),
        (f"{DLQ_HEADER_PREFIX}source-topic", topic.encode()),
        (f"{DLQ_HEADER_PREFIX}source-partition", partition.encode()),
        (f"{DLQ_HEADER_PREFIX}source-offset", offset.encode()),
        (f"{DLQ_HEADER_PREFIX}source-timestamp-ms", str(rejection.timestamp_ms).encode()),
    )
    return OutMessage(rejection.key, rejection.value or b"", headers)


def dead_letter_message(letter: DeadLetter) -> OutMessage:
    """DLQ record for an undeliverable or failed delivery: JSON context, reason in headers."""
    headers = (
        (f"{DLQ_HEADER_PREFIX}kind", letter.kind.encode()),
        (f"{DLQ_HEADER_PREFIX}reason", letter.reason[:1000].encode()),
    )
    body = {"kind": letter.kind, "reason": letter.reason, **letter.context}
    return OutMessage(letter.key.encode(), orjson.dumps(body, default=str), headers)
