"""The orchestration dataflow: requests → validated, deduplicated, routed, delivered → events.

Run: ``python -m bytewax.run "flows.orchestrate:build_flow()"`` (``notiflow run`` does this,
with ``-i/-a`` for several processes). Wiring only; the logic is in ``operators/`` and
``connectors/``.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic

from connectors.dispatch import Dispatcher, RetryPolicy
from connectors.registry import build_connectors
from notiflow import metrics
from notiflow.kafka.sink import KafkaProducerSink
from notiflow.kafka.source import KafkaRecordSource, Record, SourceError
from notiflow.messages import DeadLetter, dead_letter_message, event_message, rejection_message
from notiflow.runtime import init_process
from notiflow.settings import Settings, get_settings
from operators.dedup import IdempotencyWindow, SeenIds
from operators.events import make_event, note_event
from operators.parse import KIND_SOURCE_ERROR, Rejection, parse_request
from operators.routing import TemplateStore, plan_deliveries

FINAL_STATUSES = frozenset({"sent", "failed", "dead_lettered"})


class Parser:
    """Batch step: ``Record | SourceError`` → notification dict | ``Rejection``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def __call__(self, records: list[Record | SourceError]) -> list[dict | Rejection]:
        out: list[dict | Rejection] = []
        for record in records:
            if isinstance(record, SourceError):
                source = f"{record.topic}/{record.partition}/{record.offset}"
                out.append(Rejection(KIND_SOURCE_ERROR, record.reason, source, 0, None, None, ()))
                continue
            out.append(
                parse_request(
                    record.value,
                    source=f"{record.topic}/{record.partition}/{record.offset}",
                    timestamp_ms=record.timestamp_ms,
                    max_bytes=self.max_bytes,
                    key=record.key,
                    headers=record.headers,
                )
            )
        metrics.REQUESTS.labels(result="parsed").inc(len(records))
        return out


def rejection_event(rejection: Rejection) -> dict[str, Any]:
    now_ms = time.time() * 1000
    return make_event(
        notification_id=rejection.notification_id or f"rejected:{rejection.source}",
        tenant_id=rejection.tenant_id,
        user_id=rejection.user_id,
        status="rejected",
        reason=f"{rejection.kind}: {rejection.reason}",
        requested_at_ms=rejection.timestamp_ms or now_ms,
        now_ms=now_ms,
        discriminator=rejection.source,
    )


class DedupLogic(StatefulLogic):
    """Per user: accept a request id once per window; repeats become ``deduplicated``."""

    def __init__(self, window: IdempotencyWindow, state: SeenIds | None) -> None:
        self.window = window
        self.state = state

    def on_item(self, note: dict) -> tuple[list[tuple[str, Any]], bool]:
        now = time.time()
        self.state, duplicate = self.window.observe(self.state, note["id"], now)
        if duplicate:
            event = note_event(
                note,
                "deduplicated",
                now * 1000,
                reason=f"request id {note['id']!r} already accepted",
                discriminator=note["source"],
            )
            return [("event", event)], False
        return [("event", note_event(note, "accepted", now * 1000)), ("deliver", note)], False

    def on_notify(self) -> tuple[list, bool]:
        self.state = self.window.expire(self.state, time.time())
        return [], self.state is None

    def notify_at(self) -> datetime | None:
        due = self.window.next_expiry(self.state)
        return None if due is None else datetime.fromtimestamp(due, UTC)

    def snapshot(self) -> SeenIds | None:
        return None if self.state is None else self.state.copy()


class DeliveryStage:
    """Batch step: route, render and deliver; emits event dicts and ``DeadLetter``s.

    Holds one event loop and one set of connectors per worker thread, so connection pools
    live across batches.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = TemplateStore(settings.templates_dir)
        self._local = threading.local()

    def _runtime(self) -> tuple[asyncio.AbstractEventLoop, Dispatcher]:
        if not hasattr(self._local, "loop"):
            s = self.settings
            policy = RetryPolicy(
                s.delivery_max_attempts, s.retry_base_delay_seconds, s.retry_max_delay_seconds
            )
            loop = asyncio.new_event_loop()
            dispatcher = Dispatcher(build_connectors(s), policy, s.delivery_concurrency)
            atexit.register(lambda: loop.run_until_complete(dispatcher.close()))
            self._local.loop, self._local.dispatcher = loop, dispatcher
        return self._local.loop, self._local.dispatcher

    def __call__(self, items: list[tuple[str, tuple[str, Any]]]) -> list[dict | DeadLetter]:
        out: list[dict | DeadLetter] = []
        deliveries = []
        now_ms = time.time() * 1000
        for _key, (kind, payload) in items:
            if kind == "event":
                out.append(payload)
                continue
            planned, undeliverable = plan_deliveries(payload, self.templates)
            deliveries.extend(planned)
            for channel, reason in undeliverable:
                event = note_event(
                    payload, "dead_lettered", now_ms, channel=channel or None, reason=reason
                )
                out.append(event)
                out.append(
                    DeadLetter("undeliverable", reason, payload["key"], {"request": payload})
                )
        if deliveries:
            loop, dispatcher = self._runtime()
            result = loop.run_until_complete(dispatcher.deliver(deliveries))
            out.extend(result.events)
            out.extend(result.dead_letters)
        return out


def encode_event(event: dict[str, Any]) -> Any:
    """Count the event in metrics, then serialise it for the events topic."""
    channel = event["channel"] or ""
    metrics.OUTCOMES.labels(channel=channel, status=event["status"]).inc()
    if event["status"] in FINAL_STATUSES:
        requested = datetime.fromisoformat(event["requested_at"]).timestamp()
        metrics.OUTCOME_LATENCY.labels(channel=channel, status=event["status"]).observe(
            max(0.0, time.time() - requested)
        )
    return event_message(event)


def encode_dead_letter(letter: DeadLetter) -> Any:
    metrics.DLQ_MESSAGES.labels(kind=letter.kind).inc()
    return dead_letter_message(letter)


def encode_rejection(rejection: Rejection) -> Any:
    metrics.DLQ_MESSAGES.labels(kind=rejection.kind).inc()
    return rejection_message(rejection)


def build_flow(settings: Settings | None = None) -> Dataflow:
    s = settings or get_settings()
    init_process("orchestrate", s)
    kafka = s.kafka_config()
    window = IdempotencyWindow(s.dedup_window_seconds)
    flow = Dataflow("notiflow_orchestrate")

    records = op.input(
        "requests",
        flow,
        KafkaRecordSource(kafka, s.requests_topic, s.start_offset.value, s.source_batch_size),
    )  # Record | SourceError
    parsed = op.flat_map_batch("parse", records, Parser(s.max_request_bytes))
    # dict (notification) | Rejection
    split = op.branch("split_invalid", parsed, lambda item: isinstance(item, dict))
    keyed = op.key_on("key_by_user", split.trues, lambda note: note["key"])
    # (tenant/user, notification)
    decided = op.stateful("dedup", keyed, lambda resume: DedupLogic(window, resume))
    # (tenant/user, ("event", event) | ("deliver", notification))
    outputs = op.flat_map_batch("deliver", decided, DeliveryStage(s))
    # event dict | DeadLetter
    by_type = op.branch("split_dead_letters", outputs, lambda item: isinstance(item, dict))

    events = op.merge(
        "all_events", by_type.trues, op.map("reject_event", split.falses, rejection_event)
    )
    # event dict
    op.output(
        "events_out",
        op.map("encode_events", events, encode_event),
        KafkaProducerSink(kafka, s.events_topic, s.producer_linger_ms),
    )
    dead = op.merge(
        "all_dead_letters",
        op.map("encode_dead_letters", by_type.falses, encode_dead_letter),
        op.map("encode_rejections", split.falses, encode_rejection),
    )  # OutMessage
    op.output("dlq_out", dead, KafkaProducerSink(kafka, s.dlq_topic, s.producer_linger_ms))
    return flow
