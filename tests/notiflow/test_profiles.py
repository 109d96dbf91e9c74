"""ProfileStore against a real ``redis-server``: batching, cache, invalidation, tokens, import."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import orjson
import pytest
import redis
from pydantic import ValidationError
from redis.connection import Connection

from connectors.tokens import tokens_key
from notiflow.devservices import RedisServer
from notiflow.profiles import ProfileStore, profile_key
from operators.preferences import merge_profile
from operators.routing import addresses_for

SUBSCRIPTION = {
    "endpoint": "https://push.example.test/s/1",
    "keys": {"p256dh": "BPk", "auth": "au"},
}
WEBPUSH_ADDRESS = (
    'webpush:{"endpoint":"https://push.example.test/s/1","keys":{"p256dh":"BPk","auth":"au"}}'
)


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def make_store(
    redis_server: RedisServer, admin: redis.Redis
) -> Iterator[Callable[..., ProfileStore]]:
    stores: list[ProfileStore] = []

    def factory(**kwargs) -> ProfileStore:
        stores.append(ProfileStore(redis_server.url, **kwargs))
        return stores[-1]

    yield factory
    for store in stores:
        store.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_batched_lookup_is_one_round_trip(make_store, admin, monkeypatch):
    store = make_store()
    for i in range(0, 50, 2):
        store.put({"tenant_id": "acme", "user_id": f"u{i}", "email": f"u{i}@example.test"})
    admin.config_resetstat()
    sends = []
    original = Connection.send_packed_command
    monkeypatch.setattr(
        Connection,
        "send_packed_command",
        lambda self, *a, **kw: sends.append(1) or original(self, *a, **kw),
    )
    profiles = store.get_many([("acme", f"u{i}") for i in range(50)])
    monkeypatch.undo()
    assert len(sends) == 1 and store.lookups == 1
    stats = admin.info("commandstats")
    assert stats["cmdstat_get"]["calls"] == 50 and stats["cmdstat_smembers"]["calls"] == 50
    assert profiles[("acme", "u2")]["email"] == "u2@example.test"
    assert profiles[("acme", "u3")] is None
    # everything (absent profiles too) is cached now
    store.get_many([("acme", f"u{i}") for i in range(50)])
    assert store.lookups == 1 and store.hits == 50 and store.misses == 50


def test_cache_expires_after_ttl_and_is_bounded(make_store, admin):
    clock = FakeClock()
    store = make_store(ttl_s=30, clock=clock, max_entries=3)
    store.put({"tenant_id": "acme", "user_id": "u1", "locale": "de-DE"})
    assert store.get("acme", "u1")["locale"] == "de-DE"
    # a write behind the store's back (no invalidation) is not seen until the TTL passes
    admin.set(profile_key("acme", "u1"), orjson.dumps({"tenant_id": "acme", "user_id": "u1"}))
    clock.now += 29
    assert store.get("acme", "u1")["locale"] == "de-DE"
    clock.now += 2
    assert "locale" not in store.get("acme", "u1")
    assert store.lookups == 2
    store.get_many([("acme", f"x{i}") for i in range(5)])
    assert store.cache_size == 3


def test_invalidation_reaches_another_process_via_pubsub(make_store):
    writer, reader = make_store(), make_store()
    reader.start_invalidation_listener()
    assert reader.listening
    writer.put({"tenant_id": "acme", "user_id": "u1", "email": "old@example.test"})
    assert reader.get("acme", "u1")["email"] == "old@example.test"
    writer.apply(
        {"tenant_id": "acme", "user_id": "u1", "op": "merge", "profile": {"email": "new@x.test"}}
    )
    assert wait_until(lambda: reader.get("acme", "u1")["email"] == "new@x.test")
    writer.erase("acme", "u1")
    assert wait_until(lambda: reader.get("acme", "u1") is None)


def test_listener_survives_a_redis_restart_and_clears_the_cache():
    server = RedisServer().start()
    port = server.port
    store = ProfileStore(server.url)
    try:
        store.start_invalidation_listener()
        store.put({"tenant_id": "acme", "user_id": "u1"})
        assert wait_until(lambda: store.invalidations == 2)  # its own, then the echo
        store.get("acme", "u1")
        assert store.cache_size == 1
        server.stop()
        assert wait_until(lambda: not store.listening, 10)
        server = RedisServer(port=port).start()
        assert wait_until(lambda: store.listening, 15)
        assert store.cache_size == 0
        with ProfileStore(server.url) as writer:
            writer.put({"tenant_id": "acme", "user_id": "u2"})
            store.get("acme", "u2")
            writer.erase("acme", "u2")
        assert wait_until(lambda: store.cache_size == 0)
    finally:
        store.close()
        server.stop()


def test_push_tokens_live_in_the_token_set(make_store, admin):
    store = make_store(ttl_s=0)
    store.put(
        {
            "tenant_id": "acme",
            "user_id": "u1",
            "push_tokens": [
                {"platform": "fcm", "token": "x", "device_id": "pixel"},
                {"platform": "apns", "token": "ab12", "device_id": "iphone"},
            ],
            "webpush_subscriptions": [{**SUBSCRIPTION, "device_id": "firefox"}],
        }
    )
    key = tokens_key("acme", "u1")
    assert admin.smembers(key) == {"fcm:x", "apns:ab12", WEBPUSH_ADDRESS}
    profile = store.get("acme", "u1")
    assert profile["webpush_subscriptions"] == [{**SUBSCRIPTION, "device_id": "firefox"}]
    note = {"recipient": {"user_id": "u1"}}
    assert set(addresses_for("push", merge_profile(note, profile)["recipient"])) == admin.smembers(
        key
    )

    admin.srem(key, "fcm:x")  # what the dispatcher does for a dead token
    assert store.get("acme", "u1")["push_tokens"] == [
        {"platform": "apns", "token": "ab12", "device_id": "iphone"}
    ]
    admin.sadd(key, "fcm:added-elsewhere")
    tokens = store.get("acme", "u1")["push_tokens"]
    assert {"platform": "fcm", "token": "added-elsewhere"} in tokens
    # a merge that does not touch tokens leaves the set alone
    store.apply({"tenant_id": "acme", "user_id": "u1", "op": "merge", "profile": {"locale": "fr"}})
    assert "fcm:added-elsewhere" in admin.smembers(key)
    store.apply(
        {"tenant_id": "acme", "user_id": "u1", "op": "merge", "profile": {"push_tokens": []}}
    )
    assert admin.smembers(key) == {WEBPUSH_ADDRESS}


def test_merge_keeps_tokens_the_schema_would_refuse(make_store, admin):
    store = make_store(ttl_s=0)
    store.put(
        {
            "tenant_id": "acme",
            "user_id": "u1",
            "push_tokens": [{"platform": "fcm", "token": "t0", "device_id": "pixel"}],
        }
    )
    admin.sadd(tokens_key("acme", "u1"), *(f"fcm:t{i}" for i in range(1, 40)))
    merge = {"tenant_id": "acme", "user_id": "u1", "op": "merge", "profile": {"locale": "fr"}}
    assert store.apply(merge) == "applied"
    profile = store.get("acme", "u1")
    assert profile["locale"] == "fr" and len(profile["push_tokens"]) == 40
    assert profile["push_tokens"][0] == {"platform": "fcm", "token": "t0", "device_id": "pixel"}


def test_merge_appends_consents_replaces_fields_and_ignores_stale(make_store):
    store = make_store(ttl_s=0, now=lambda: datetime(2026, 1, 15, tzinfo=UTC))
    consent = {"channel": "sms", "granted": True, "at": "2026-01-01T00:00:00Z", "source": "web"}
    base = {"tenant_id": "acme", "user_id": "u1"}
    store.apply({**base, "op": "upsert", "profile": {"phone": "+4915112345678", "locale": "de"}})
    merge = {**base, "op": "merge", "at": "2026-02-01T00:00:00Z"}
    store.apply({**merge, "profile": {"consents": [consent], "locale": None}})
    store.apply({**merge, "profile": {"consents": [consent]}})  # a replay adds nothing
    withdrawn = {**consent, "granted": False, "at": "2026-03-01T00:00:00Z"}
    store.apply({**merge, "profile": {"consents": [withdrawn], "email": "u1@x.test"}})
    profile = store.get("acme", "u1")
    assert [c["granted"] for c in profile["consents"]] == [True, False]
    assert profile["phone"] == "+4915112345678" and "locale" not in profile
    assert profile["updated_at"] == "2026-02-01T00:00:00Z"
    old = {**base, "op": "upsert", "profile": {}, "at": "2025-12-01T00:00:00Z"}
    assert store.apply(old) == "stale"
    assert store.get("acme", "u1")["email"] == "u1@x.test"
    assert store.apply({**base, "op": "upsert", "profile": {}}) == "applied"
    assert "phone" not in store.get("acme", "u1")


def test_import_reports_bad_lines_and_imports_the_rest(make_store, tmp_path):
    store = make_store(ttl_s=0)
    lines = [
        orjson.dumps({"tenant_id": "acme", "user_id": "u1", "email": "u1@x.test"}),
        orjson.dumps({"tenant_id": "acme", "user_id": "u2", "email": "not-an-email"}),
        b"",
        b"{not json",
        *(orjson.dumps({"tenant_id": "acme", "user_id": f"v{i}"}) for i in range(5)),
    ]
    path = tmp_path / "users.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    progress: list[int] = []
    result = store.import_jsonl(path, progress.append, chunk_size=2)
    assert (result.imported, result.invalid) == (6, 2)
    assert [number for number, _ in result.errors] == [2, 4]
    assert "email" in result.errors[0][1]
    assert sum(progress) == len(lines) and len(progress) > 1
    assert store.get("acme", "u1")["email"] == "u1@x.test"
    assert store.get("acme", "u2") is None
    assert store.get("acme", "v4")["updated_at"]


def test_erase_removes_profile_and_tokens(make_store, admin):
    writer, reader = make_store(), make_store()
    writer.put(
        {"tenant_id": "acme", "user_id": "u1", "push_tokens": [{"platform": "fcm", "token": "t"}]}
    )
    assert reader.get("acme", "u1") is not None
    assert writer.erase("acme", "u1")
    assert admin.exists(profile_key("acme", "u1"), tokens_key("acme", "u1")) == 0
    assert writer.get("acme", "u1") is None
    assert not writer.erase("acme", "u1")
    writer.put({"tenant_id": "acme", "user_id": "u2"})
    assert writer.apply({"tenant_id": "acme", "user_id": "u2", "op": "erase"}) == "erased"
    assert writer.get("acme", "u2") is None


def test_invalid_updates_are_rejected(make_store):
    store = make_store()
    bad = [
        {"tenant_id": "a", "user_id": "u", "op": "merge"},
        {"tenant_id": "a", "user_id": "u", "op": "merge", "profile": {"nickname": "x"}},
        {"tenant_id": "a", "user_id": "u", "op": "merge", "profile": {"user_id": "v"}},
        {"tenant_id": "a", "user_id": "u", "op": "upsert", "profile": {"phone": "12"}},
        {"tenant_id": "a", "user_id": "u", "op": "erase", "profile": {"phone": "+4915112345678"}},
    ]
    for update in bad:
        with pytest.raises(ValidationError):
            store.apply(update)
    assert store.get("a", "u") is None
