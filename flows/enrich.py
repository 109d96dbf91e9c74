"""User-context steps of the orchestration flow: experiments, profiles, preferences, profile
updates and the strategy feedback read back from the events topic.

Thin adapters: the decisions are in ``operators/experiments.py``, ``operators/preferences.py``
and ``operators/strategy.py``; the Redis store is ``notiflow/profiles.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError
from redis.exceptions import RedisError

from notiflow import metrics
from notiflow.kafka.source import Record, SourceError
from notiflow.messages import STATUS_HEADER, STRATEGY_HEADER
from notiflow.profiles import ProfileStore
from notiflow.settings import Settings
from operators.events import note_event
from operators.experiments import ExperimentBook, apply_experiments
from operators.parse import KIND_INVALID, KIND_NOT_JSON, KIND_SOURCE_ERROR, Rejection, user_key
from operators.preferences import PreferencePolicy, filter_channels, merge_profile
from operators.routing import choose_channels
from operators.strategy import FAILURE_STATUSES, RECEIPT_STATUSES
from operators.user_pipeline import Release

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Redis unavailable: keep retrying (the flow waits, nothing is sent unchecked) this long,
#: then fail loudly; the flow restarts from its last snapshot.
REDIS_RETRY_S = 120.0
#: Events the strategies learn from: receipts and failures of any notification, and ``sent``
#: of the notifications whose strategy waits for receipts.
FEEDBACK_STATUSES = FAILURE_STATUSES | RECEIPT_STATUSES | {"sent"}
FEEDBACK_STRATEGIES = frozenset({"sequential", "smart"})


def with_redis_retry(call: Callable[[], T], what: str, limit_s: float = REDIS_RETRY_S) -> T:
    """``call()``, retried with backoff while Redis is unavailable (up to ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    delay = 0.1
    while True:
        try:
            return call()
        except RedisError as error:
            if time.monotonic() >= deadline:
                raise
            logger.error("redis unavailable; retrying", extra={"what": what, "error": str(error)})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


_stores: dict[tuple[str, float, int], ProfileStore] = {}


def profile_store(settings: Settings) -> ProfileStore | None:
    """The process's one cached profile store (invalidated by pub/sub), shared by the steps
    that read profiles; ``None`` without Redis."""
    if not settings.redis_url:
        return None
    key = (
        settings.redis_url,
        settings.profile_cache_ttl_seconds,
        settings.profile_cache_max_entries,
    )
    if key not in _stores:
        store = ProfileStore(key[0], ttl_s=key[1], max_entries=key[2])
        store.start_invalidation_listener()
        _stores[key] = store
    return _stores[key]


def close_profile_stores() -> None:
    """Stop the process's profile stores (their listeners) and forget them: for a process
    that outlives its Redis, e.g. a test session that stops the server."""
    stores = list(_stores.values())
    _stores.clear()
    for store in stores:
        store.close()


class Enricher:
    """Batch step on notification dicts: A/B assignment, profile merge (one Redis round trip
    per batch, cached), then preference filtering. Emits notes (with the eligible channels
    made explicit, ``channels_derived`` when the request named none) and ``suppressed`` event
    dicts."""

    def __init__(self, settings: Settings) -> None:
        self.experiments = ExperimentBook.from_dict(orjson.loads(settings.experiments))
        self.policy = PreferencePolicy.from_config(settings.preference_policy)
        self.settings = settings

    def __call__(self, notes: list[dict]) -> list[dict]:
        notes = [apply_experiments(note, self.experiments) for note in notes]
        profiles = self._profiles(notes)
        out: list[dict] = []
        now_ms = time.time() * 1000
        for note in notes:
            profile = profiles.get((note["tenant_id"], note["user_id"]))
            if profile is None and not self.policy.for_tenant(note["tenant_id"]).consent_required:
                out.append(note)  # no opt-outs and no consent rule: nothing can be refused
                continue
            if profile is not None:
                note = merge_profile(note, profile)
            candidates = choose_channels(note)
            eligible, suppressed = filter_channels(note, candidates, profile, self.policy)
            for channel, reason in suppressed:
                out.append(note_event(note, "suppressed", now_ms, channel=channel, reason=reason))
            if suppressed and not eligible:
                continue  # every channel refused: the suppressed events are its outcome
            if suppressed:
                # The eligible channels made explicit. When the request named none, they are not
                # its own order: ``channels_derived`` lets the sequential strategy order them.
                derived = not note["channels"]
                note = {**note, "channels": eligible, "channels_derived": derived}
            out.append(note)
        return out

    def _profiles(self, notes: list[dict]) -> dict[tuple[str, str], dict | None]:
        store = profile_store(self.settings)
        if store is None or not notes:
            return {}
        refs = [(n["tenant_id"], n["user_id"]) for n in notes]
        hits, lookups = store.hits, store.lookups
        found = with_redis_retry(lambda: store.get_many(refs), "profile lookup")
        metrics.PROFILE_CACHE.labels(result="hit").inc(store.hits - hits)
        metrics.PROFILE_CACHE.labels(result="miss").inc(len(refs) - (store.hits - hits))
        metrics.PROFILE_ROUND_TRIPS.inc(store.lookups - lookups)
        return found


def was_held(note: dict[str, Any]) -> bool:
    """Released after waiting in state (scheduled, quiet hours, deferred) or as a digest."""
    return bool(note.get("_holds") or note["metadata"].get("digest_of"))


class ReleaseRecheck:
    """Batch step on the per-user step's ``(key, output)`` pairs: a notification released
    after being held is checked against the user's preferences again, so an opt-out (or a
    withdrawn consent) that arrived while it waited wins. Everything else passes untouched."""

    def __init__(self, settings: Settings) -> None:
        self.policy = PreferencePolicy.from_config(settings.preference_policy)
        self.settings = settings

    def __call__(self, keyed: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        held = [
            (index, item)
            for index, (_key, item) in enumerate(keyed)
            if isinstance(item, Release) and item.channels and was_held(item.note)
        ]
        store = profile_store(self.settings) if held else None
        if store is None:
            return keyed
        refs = [(r.note["tenant_id"], r.note["user_id"]) for _, r in held]
        profiles = with_redis_retry(lambda: store.get_many(refs), "profile recheck")
        out: list[tuple[str, Any] | None] = list(keyed)
        now_ms = time.time() * 1000
        for index, release in held:
            note = release.note
            profile = profiles.get((note["tenant_id"], note["user_id"]))
            eligible, suppressed = filter_channels(note, release.channels, profile, self.policy)
            if not suppressed:
                continue
            key = keyed[index][0]
            out[index] = (key, Release(note, tuple(eligible))) if eligible else None
            for channel, reason in suppressed:
                why = f"{reason} (checked again at release)"
                out.append(
                    (key, note_event(note, "suppressed", now_ms, channel=channel, reason=why))
                )
        return [item for item in out if item is not None]


class ProfileUpdater:
    """Batch step on profile-update records: apply each to Redis in order (one partition =
    one user's updates in order). A malformed update becomes a ``Rejection`` (DLQ)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: ProfileStore | None = None

    def __call__(self, records: list[Record | SourceError]) -> list[Rejection]:
        rejected: list[Rejection] = []
        for record in records:
            source = f"{record.topic}/{record.partition}/{record.offset}"
            if isinstance(record, SourceError):
                rejected.append(
                    Rejection(KIND_SOURCE_ERROR, record.reason, source, 0, None, None, ())
                )
                continue
            reject = self._apply(record)
            if reject is not None:
                kind, reason = reject
                rejected.append(
                    Rejection(
                        kind,
                        reason,
                        source,
                        record.timestamp_ms,
                        record.value,
                        record.key,
                        record.headers,
                    )
                )
        return rejected

    def _apply(self, record: Record) -> tuple[str, str] | None:
        store = self._get_store()
        if store is None:
            return KIND_INVALID, "profile updates need REDIS_URL"
        try:
            update = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError as error:
            return KIND_NOT_JSON, f"not valid JSON: {error}"
        try:
            outcome = with_redis_retry(lambda: store.apply(update), "profile update")
        except ValidationError as error:
            return KIND_INVALID, f"invalid profile update: {error.errors()[0]['msg']}"
        except (TypeError, ValueError) as error:
            return KIND_INVALID, f"invalid profile update: {error}"
        metrics.PROFILE_UPDATES.labels(outcome=outcome).inc()
        return None

    def _get_store(self) -> ProfileStore | None:
        s = self.settings
        if self._store is None and s.redis_url:  # writes only: no cache, nothing to invalidate
            self._store = ProfileStore(s.redis_url, ttl_s=0)
        return self._store


def wants_feedback(headers: list[tuple[str, bytes]] | None) -> bool:
    """Cheap header check, in the source: is this event one a strategy learns from?"""
    found = dict(headers) if headers else {}
    status = found.get(STATUS_HEADER)
    if status is None:
        return True  # not written by notiflow (e.g. a receipt): decided after parsing
    if status == b"sent":
        return found.get(STRATEGY_HEADER, b"").decode() in FEEDBACK_STRATEGIES
    return status.decode() in FEEDBACK_STATUSES


def feedback_event(record: Record | SourceError) -> list[tuple[str, dict[str, Any]]]:
    """``(tenant/user, event)`` for the user's stateful step; unparseable events are skipped
    (the events topic is ours: analytics reports malformed ones)."""
    if isinstance(record, SourceError):
        logger.warning("strategy feedback: consumer error", extra={"reason": record.reason})
        return []
    try:
        event = orjson.loads(record.value or b"")
        key = user_key(event["tenant_id"], event["user_id"])
        status, strategy = event["status"], event.get("strategy")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        logger.warning("unreadable event skipped by strategy feedback")
        return []
    if status not in FEEDBACK_STATUSES or (
        status == "sent" and strategy not in FEEDBACK_STRATEGIES
    ):
        return []
    return [(key, event)]
