"""User profiles in Redis, read in batches through a TTL cache invalidated over pub/sub.

Storage, per tenant and user:

* ``notiflow:profile:{tenant}:{user}``: the profile as orjson (``UserProfile`` JSON without its
  push tokens, plus ``push_addresses``: address → device id, which also keeps their order);
* ``notiflow:push_tokens:{tenant}:{user}``: the push addresses (``fcm:<token>``,
  ``apns:<token>``, ``webpush:<subscription JSON>``), the set ``connectors.tokens`` reads and
  the dispatcher prunes, so a token a provider rejected disappears from the profile too.

Reads (``get_many``) fetch every cache miss in one pipelined round trip and cache the result,
absent profiles included, for ``ttl_s`` in a bounded LRU. Writes (``apply``, ``import_jsonl``)
are MULTI transactions that also PUBLISH the profile key on ``notiflow:profile-invalidations``;
``start_invalidation_listener`` evicts those keys in every process, and clears the whole cache
whenever it (re)subscribes, since messages sent while it was away are lost. A dispatcher
pruning a dead token does not publish: the cached copy keeps it for at most ``ttl_s``.

Thread-safe: the cache is shared by the caller's thread and the listener thread. Redis
failures surface as ``redis.RedisError`` from reads and writes; returned dicts are shared with
the cache and must not be mutated.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import orjson
import redis
from pydantic import ValidationError
from redis.exceptions import RedisError

from connectors.tokens import PROFILE_INVALIDATIONS, profile_key, tokens_key
from operators.parse import describe_validation_error
from operators.preferences import webpush_token
from schemas.profile import (
    ProfilePushToken,
    ProfileUpdate,
    UserProfile,
    WebPushKeys,
    WebPushSubscription,
)

__all__ = [
    "INVALIDATION_CHANNEL",
    "ImportResult",
    "ProfileStore",
    "UserRef",
    "profile_key",
]

log = logging.getLogger(__name__)

INVALIDATION_CHANNEL = PROFILE_INVALIDATIONS
DEFAULT_TTL_S = 30.0
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_IMPORT_CHUNK = 1000
MAX_REPORTED_ERRORS = 1000
LISTEN_POLL_S = 1.0
RECONNECT_DELAYS_S = (0.1, 5.0)  # first and longest wait between listener reconnects

PUSH_FIELDS = frozenset({"push_tokens", "webpush_subscriptions"})

UserRef = tuple[str, str]  # (tenant_id, user_id)
Outcome = Literal["applied", "stale", "erased"]


@dataclass
class ImportResult:
    """Counts of an import; ``errors`` holds the first ``MAX_REPORTED_ERRORS`` (line, reason)."""

    imported: int = 0
    invalid: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


# --- storage format ------------------------------------------------------------------------
def _to_stored(profile: UserProfile) -> tuple[bytes, dict[str, str | None]]:
    """(profile key value, push address → device id) for a validated profile."""
    doc = profile.model_dump(mode="json", exclude_none=True)
    addresses: dict[str, str | None] = {}
    for token in doc.pop("push_tokens"):
        addresses[f"{token['platform']}:{token['token']}"] = token.get("device_id")
    for subscription in doc.pop("webpush_subscriptions"):
        addresses[f"webpush:{webpush_token(subscription)}"] = subscription.get("device_id")
    doc["push_addresses"] = addresses
    return orjson.dumps(doc), addresses


def _from_stored(ref: UserRef, raw: bytes | None, members: Iterable[bytes]) -> dict | None:
    """The profile dict (``UserProfile`` JSON shape) from both keys; None when both are empty."""
    present = {m.decode() for m in members}
    if raw is None and not present:
        return None
    doc: dict[str, Any] = {"tenant_id": ref[0], "user_id": ref[1]}
    if raw is not None:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("unreadable stored profile", extra={"key": profile_key(*ref)})
    known: dict[str, str | None] = doc.pop("push_addresses", None) or {}
    ordered = [a for a in known if a in present] + sorted(present - known.keys())
    push_tokens: list[dict[str, str]] = []
    webpush: list[dict[str, Any]] = []
    for address in ordered:
        platform, _, token = address.partition(":")
        entry: dict[str, Any]
        if platform in ("fcm", "apns") and token:
            entry = {"platform": platform, "token": token}
            push_tokens.append(entry)
        elif platform == "webpush":
            try:
                subscription = orjson.loads(token)
                keys = subscription["keys"]
                entry = {
                    "endpoint": subscription["endpoint"],
                    "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]},
                }
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            webpush.append(entry)
        else:
            continue
        if known.get(address):
            entry["device_id"] = known[address]
    doc["push_tokens"] = push_tokens
    doc["webpush_subscriptions"] = webpush
    return doc


def _next_profile(current: dict | None, update: ProfileUpdate, now: datetime) -> UserProfile:
    """The profile after an upsert or merge (merge: given fields replace, consents append)."""
    given = update.validated_profile().model_dump(mode="json", exclude_none=True)
    if update.op == "upsert" or current is None:
        doc = given
    else:
        doc = dict(current)
        for name in update.profile or {}:
            if name in ("tenant_id", "user_id"):
                continue
            if name == "consents":
                history = list(doc.get("consents", []))
                history += [c for c in given.get("consents", []) if c not in history]
                doc["consents"] = history
            elif name in given:
                doc[name] = given[name]
            else:
                doc.pop(name, None)
    doc["updated_at"] = update.at or now
    if update.op == "upsert" or current is None or PUSH_FIELDS & set(update.profile or {}):
        return UserProfile.model_validate(doc)
    # Tokens the merge does not touch are kept as stored, even ones other writers added to
    # the set that the schema would refuse (a 33rd device, say): a locale change must not fail.
    kept = {name: doc.pop(name, []) for name in PUSH_FIELDS}
    return UserProfile.model_validate(doc).model_copy(
        update={
            "push_tokens": [ProfilePushToken.model_construct(**t) for t in kept["push_tokens"]],
            "webpush_subscriptions": [
                WebPushSubscription.model_construct(
                    **{**w, "keys": WebPushKeys.model_construct(**w["keys"])}
                )
                for w in kept["webpush_subscriptions"]
            ],
        }
    )


def _queue_write(pipe: redis.client.Pipeline, profile: UserProfile, tokens: bool = True) -> str:
    """Queue SET profile, DEL + SADD its push addresses (if ``tokens``) and PUBLISH on
    ``pipe``; returns the profile key."""
    pkey = profile_key(profile.tenant_id, profile.user_id)
    tkey = tokens_key(profile.tenant_id, profile.user_id)
    stored, addresses = _to_stored(profile)
    pipe.set(pkey, stored)
    if tokens:
        pipe.delete(tkey)
        if addresses:
            pipe.sadd(tkey, *addresses)
    pipe.publish(INVALIDATION_CHANNEL, pkey)
    return pkey


def _newer_than(stored: dict | None, at: datetime | None) -> bool:
    if at is None or not stored or not stored.get("updated_at"):
        return False
    return datetime.fromisoformat(stored["updated_at"]) > at


class ProfileStore:
    """Profiles of every tenant in one Redis; see the module docstring for the format."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ValueError("ttl_s must be >= 0 (0: no cache) and max_entries >= 1")
        self._client = redis.Redis.from_url(
            url, decode_responses=False, socket_timeout=5, socket_connect_timeout=2
        )
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._now = now
        self._cache: OrderedDict[str, tuple[float, dict | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch = 0  # bumped by every eviction: a read racing one is not cached
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._listener: threading.Thread | None = None
        #: Counters for metrics: keys served from cache / fetched, Redis round trips, evictions.
        self.hits = 0
        self.misses = 0
        self.lookups = 0
        self.invalidations = 0

    # --- reads -----------------------------------------------------------------------------
    def get_many(self, refs: Iterable[UserRef]) -> dict[UserRef, dict | None]:
        """Profile (or None) per ``(tenant, user)``; every cache miss in one round trip."""
        now = self._clock()
        found: dict[UserRef, dict | None] = {}
        missing: list[UserRef] = []
        with self._lock:
            epoch = self._epoch
            for ref in dict.fromkeys(refs):
                key = profile_key(*ref)
                entry = self._cache.get(key)
                if entry is not None and entry[0] > now:
                    self._cache.move_to_end(key)
                    found[ref] = entry[1]
                else:
                    missing.append(ref)
            self.hits += len(found)
            self.misses += len(missing)
        if not missing:
            return found
        pipe = self._client.pipeline(transaction=False)
        for ref in missing:
            pipe.get(profile_key(*ref))
            pipe.smembers(tokens_key(*ref))
        replies = pipe.execute()
        self.lookups += 1
        fetched = {
            ref: _from_stored(ref, *replies[2 * i : 2 * i + 2]) for i, ref in enumerate(missing)
        }
        if self.ttl_s > 0:
            with self._lock:
                if self._epoch == epoch:
                    for ref, profile in fetched.items():
                        key = profile_key(*ref)
                        self._cache[key] = (now + self.ttl_s, profile)
                        self._cache.move_to_end(key)
                    while len(self._cache) > self.max_entries:
                        self._cache.popitem(last=False)
        return found | fetched

    def get(self, tenant_id: str, user_id: str) -> dict | None:
        return self.get_many([(tenant_id, user_id)])[(tenant_id, user_id)]

    # --- writes ----------------------------------------------------------------------------
    def apply(self, update: ProfileUpdate | Mapping[str, Any]) -> Outcome:
        """Apply one profile-update message atomically; ``stale`` when it was older than the
        stored profile. Raises ``pydantic.ValidationError`` for an invalid update."""
        if not isinstance(update, ProfileUpdate):
            update = ProfileUpdate.model_validate(update)
        ref = (update.tenant_id, update.user_id)
        if update.op == "erase":
            self._erase(ref)
            return "erased"
        pkey, tkey = profile_key(*ref), tokens_key(*ref)
        rewrite_tokens = update.op == "upsert" or bool(PUSH_FIELDS & set(update.profile or {}))

        def write(pipe: redis.client.Pipeline) -> Outcome:
            current = _from_stored(ref, pipe.get(pkey), pipe.smembers(tkey))
            if _newer_than(current, update.at):
                return "stale"
            profile = _next_profile(current, update, self._now())
            pipe.multi()
            _queue_write(pipe, profile, tokens=rewrite_tokens)
            return "applied"

        outcome = self._client.transaction(write, pkey, tkey, value_from_callable=True)
        self._evict(pkey)
        return outcome

    def put(self, profile: UserProfile | Mapping[str, Any]) -> Outcome:
        """Store a whole profile (upsert); its ``updated_at``, if any, is the update time."""
        if not isinstance(profile, UserProfile):
            profile = UserProfile.model_validate(profile)
        body = profile.model_dump(mode="json", exclude_none=True)
        update = ProfileUpdate(
            tenant_id=profile.tenant_id,
            user_id=profile.user_id,
            op="upsert",
            profile=body,
            at=profile.updated_at,
        )
        return self.apply(update)

    def erase(self, tenant_id: str, user_id: str) -> bool:
        """Delete the user's profile and push tokens; False when there was nothing."""
        return self._erase((tenant_id, user_id)) > 0

    def _erase(self, ref: UserRef) -> int:
        pkey = profile_key(*ref)
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(pkey, tokens_key(*ref))
        pipe.publish(INVALIDATION_CHANNEL, pkey)
        deleted, _ = pipe.execute()
        self._evict(pkey)
        return int(deleted)

    def import_jsonl(
        self,
        path: str | Path,
        progress: Callable[[int], object] | None = None,
        chunk_size: int = DEFAULT_IMPORT_CHUNK,
    ) -> ImportResult:
        """Upsert one ``UserProfile`` JSON per line, ``chunk_size`` users per transaction.

        Invalid lines are counted and reported with their number; the rest is imported.
        ``progress(n)`` is called after each chunk with the lines it covered (blank included).
        """
        result = ImportResult()
        batch: list[UserProfile] = []
        pending = 0
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                pending += 1
                if line.strip():
                    try:
                        batch.append(UserProfile.model_validate_json(line))
                    except ValidationError as error:
                        result.invalid += 1
                        if len(result.errors) < MAX_REPORTED_ERRORS:
                            result.errors.append((number, describe_validation_error(error)))
                if len(batch) >= chunk_size:
                    result.imported += self._write_batch(batch)
                    batch = []
                    if progress is not None:
                        progress(pending)
                    pending = 0
        result.imported += self._write_batch(batch)
        if progress is not None and pending:
            progress(pending)
        return result

    def _write_batch(self, profiles: list[UserProfile]) -> int:
        if not profiles:
            return 0
        stamp = self._now()
        pipe = self._client.pipeline(transaction=True)
        keys = [
            _queue_write(pipe, p if p.updated_at else p.model_copy(update={"updated_at": stamp}))
            for p in profiles
        ]
        pipe.execute()
        for key in keys:
            self._evict(key)
        return len(profiles)

    # --- cache invalidation ----------------------------------------------------------------
    def invalidate(self, tenant_id: str, user_id: str) -> None:
        """Forget this process's cached copy of one profile."""
        self._evict(profile_key(tenant_id, user_id))

    def clear(self) -> None:
        """Forget every cached profile."""
        with self._lock:
            self._cache.clear()
            self._epoch += 1

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    @property
    def listening(self) -> bool:
        """True while the invalidation listener is subscribed."""
        return self._subscribed.is_set()

    def _evict(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)
            self._epoch += 1
            self.invalidations += 1

    def start_invalidation_listener(self, ready_timeout_s: float = 5.0) -> threading.Thread:
        """Run the pub/sub listener in a daemon thread; waits (bounded) until it subscribed."""
        if self._listener is None or not self._listener.is_alive():
            self._stop.clear()
            self._listener = threading.Thread(
                target=self._listen, name="notiflow-profile-invalidations", daemon=True
            )
            self._listener.start()
        if not self._subscribed.wait(ready_timeout_s):
            log.warning("profile invalidation listener not subscribed yet; retrying")
        return self._listener

    def _listen(self) -> None:
        delay = RECONNECT_DELAYS_S[0]
        while not self._stop.is_set():
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(INVALIDATION_CHANNEL)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=LISTEN_POLL_S)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        self._evict(message["data"].decode())
                    elif message["type"] == "subscribe":
                        self.clear()  # whatever was published while away is lost
                        self._subscribed.set()
                        delay = RECONNECT_DELAYS_S[0]
            except (RedisError, OSError) as error:
                self._subscribed.clear()
                log.warning(
                    "profile invalidation listener lost Redis; reconnecting",
                    extra={"error": str(error), "retry_in_s": delay},
                )
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_DELAYS_S[1])
            finally:
                with contextlib.suppress(RedisError, OSError):
                    pubsub.close()
        self._subscribed.clear()

    # --- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the listener (waits for it) and close the Redis connections."""
        self._stop.set()
        if self._listener is not None:
            self._listener.join(LISTEN_POLL_S * 3)
            self._listener = None
        self._client.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
