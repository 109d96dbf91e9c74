"""Stateless step callables used by the flows (thin: the logic is in operators/ and connectors/)."""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

from connectors.base import Delivery
from connectors.dispatch import Dispatcher, RetryPolicy
from connectors.registry import (
    build_ledger,
    build_provider_limiter,
    build_routes,
    build_token_store,
)
from notiflow import metrics
from notiflow.kafka.source import Record, SourceError
from notiflow.messages import DeadLetter, dead_letter_message, event_message, rejection_message
from notiflow.settings import Settings
from operators.events import make_event, note_event
from operators.parse import KIND_INVALID, KIND_SOURCE_ERROR, Campaign, Rejection, parse_request
from operators.routing import plan_deliveries
from operators.templates import ContentLimits, RedisTemplates, TemplateStore
from operators.user_pipeline import Release

FINAL_STATUSES = frozenset({"sent", "failed", "dead_lettered"})


class Parser:
    """Batch step: ``Record | SourceError`` → notification dict | ``Campaign`` | ``Rejection``."""

    def __init__(self, settings: Settings) -> None:
        self.max_bytes = settings.max_request_bytes
        self.max_campaign_bytes = settings.max_campaign_bytes
        self.segments_available = settings.redis_url is not None

    def __call__(self, records: list[Record | SourceError]) -> list[dict | Campaign | Rejection]:
        out: list[dict | Campaign | Rejection] = []
        for record in records:
            source = f"{record.topic}/{record.partition}/{record.offset}"
            if isinstance(record, SourceError):
                out.append(Rejection(KIND_SOURCE_ERROR, record.reason, source, 0, None, None, ()))
                continue
            item = parse_request(
                record.value,
                source=source,
                timestamp_ms=record.timestamp_ms,
                max_bytes=self.max_bytes,
                max_campaign_bytes=self.max_campaign_bytes,
                key=record.key,
                headers=record.headers,
            )
            if (
                isinstance(item, Campaign)
                and "segment" in item.body["audience"]
                and not self.segments_available
            ):
                item = Rejection(
                    KIND_INVALID,
                    "segment audiences need REDIS_URL",
                    source,
                    record.timestamp_ms,
                    record.value,
                    record.key,
                    record.headers,
                    tenant_id=item.body["tenant_id"],
                )
            out.append(item)
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


class Planner:
    """Map step on released notifications: render and address them.

    Output: ``Delivery`` per channel address; an event and a ``DeadLetter`` for every channel
    that cannot be attempted, the letter's kind being the ``Undeliverable`` kind
    (``undeliverable``: no address; ``template_error``; ``content_invalid``). Tenant templates
    are read from Redis when ``REDIS_URL`` is set.
    """

    def __init__(self, settings: Settings) -> None:
        refresh_s = settings.templates_refresh_seconds
        url = settings.redis_url
        redis = RedisTemplates(url, refresh_s=refresh_s) if url else None
        self.templates = TemplateStore(
            settings.templates_dir,
            redis=redis,
            default_locale=settings.default_locale,
            limits=ContentLimits(sms_max_segments=settings.sms_max_segments),
        )

    def plan_batch(self, keyed: list[tuple[str, dict | Release]]) -> list[Any]:
        """Batch step on the per-user step's ``(key, output)`` pairs: one call per batch
        rather than two per item (drop the key, plan)."""
        out: list[Any] = []
        for _key, item in keyed:
            if isinstance(item, dict):
                out.append(item)
            else:
                out += self(item)
        return out

    def __call__(self, item: dict | Release) -> list[dict | Delivery | DeadLetter]:
        if isinstance(item, dict):
            return [item]
        note, channels = item
        deliveries, undeliverable = plan_deliveries(note, self.templates, channels)
        out: list[dict | Delivery | DeadLetter] = list(deliveries)
        now_ms = time.time() * 1000
        for channel, reason, kind in undeliverable:
            out.append(
                note_event(note, "dead_lettered", now_ms, channel=channel or None, reason=reason)
            )
            context = {"request": note, "channel": channel or None}
            out.append(DeadLetter(kind, reason, note["key"], context))
        return out


class Deliverer:
    """Batch step over the deliveries planned on this worker: send through the connectors.

    Batches are what one activation brings (a source poll's worth under load, a single
    delivery when quiet), split at ``delivery_batch_size``: no waiting to fill a batch and no
    exchange between workers. One event loop, set of connectors (connection pools) and
    provider limiter per worker thread, kept across batches. Emits event dicts and
    ``DeadLetter``s.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()

    def _runtime(self) -> tuple[asyncio.AbstractEventLoop, Dispatcher]:
        if not hasattr(self._local, "loop"):
            s = self.settings
            policy = RetryPolicy(
                s.delivery_max_attempts, s.retry_base_delay_seconds, s.retry_max_delay_seconds
            )
            loop = asyncio.new_event_loop()
            dispatcher = Dispatcher(
                build_routes(s),
                policy,
                s.delivery_concurrency,
                limiter=build_provider_limiter(s),
                ledger=build_ledger(s),
                tokens=build_token_store(s),
            )
            atexit.register(lambda: loop.run_until_complete(dispatcher.close()))
            self._local.loop, self._local.dispatcher = loop, dispatcher
        return self._local.loop, self._local.dispatcher

    def __call__(self, deliveries: list[Delivery]) -> list[dict | DeadLetter]:
        if not deliveries:
            return []
        loop, dispatcher = self._runtime()
        out: list[dict | DeadLetter] = []
        size = self.settings.delivery_batch_size
        for start in range(0, len(deliveries), size):
            result = loop.run_until_complete(dispatcher.deliver(deliveries[start : start + size]))
            out += result.events
            out += result.dead_letters
        return out


def encode_events(events: list[dict[str, Any]]) -> list[Any]:
    """Batch step: count the events in metrics (one increment per label set and batch, not
    per event: each ``inc`` takes a lock), then serialise them for the events topic."""
    counts: Counter[tuple[str, str]] = Counter()
    now = time.time()
    for event in events:
        key = (event["channel"] or "", event["status"])
        counts[key] += 1
        if key[1] in FINAL_STATUSES:
            requested = datetime.fromisoformat(event["requested_at"]).timestamp()
            metrics.child(metrics.OUTCOME_LATENCY, *key).observe(max(0.0, now - requested))
    for key, count in counts.items():
        metrics.child(metrics.OUTCOMES, *key).inc(count)
    return [event_message(event) for event in events]


def encode_dead_letter(letter: DeadLetter) -> Any:
    metrics.child(metrics.DLQ_MESSAGES, letter.kind).inc()
    return dead_letter_message(letter)


def encode_rejection(rejection: Rejection) -> Any:
    metrics.child(metrics.DLQ_MESSAGES, rejection.kind).inc()
    return rejection_message(rejection)
