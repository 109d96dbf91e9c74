"""``ReleaseRecheck``: a notification released after a hold honours an opt-out that arrived
while it waited. Against a real redis-server (profiles written through ``ProfileStore``)."""

from __future__ import annotations

from flows.enrich import ReleaseRecheck
from notiflow.profiles import ProfileStore
from notiflow.settings import Settings
from operators.user_pipeline import Release


def note(nid: str, user: str, **fields) -> dict:
    return {
        "id": nid,
        "tenant_id": "acme",
        "user_id": user,
        "key": f"acme/{user}",
        "category": "news",
        "priority": "normal",
        "channels": None,
        "recipient": {"user_id": user, "email": f"{user}@example.test"},
        "metadata": {},
        "requested_at_ms": 1_700_000_000_000.0,
        **fields,
    }


def test_an_opt_out_during_the_hold_wins_at_release(redis_server):
    settings = Settings(redis_url=redis_server.url, profile_cache_ttl_seconds=0)
    with ProfileStore(redis_server.url) as store:
        store.put({"tenant_id": "acme", "user_id": "u1", "opt_outs": {"channels": ["email"]}})
        store.put({"tenant_id": "acme", "user_id": "u2"})
    held_u1 = Release(note("n1", "u1", _holds=1), ("email", "webhook"))
    held_u2 = Release(note("n2", "u2", _holds=1), ("email",))
    fresh_u1 = Release(note("n3", "u1"), ("email",))  # checked at acceptance already
    event = {"event_id": "e", "status": "accepted"}
    out = ReleaseRecheck(settings)(
        [("acme/u1", held_u1), ("acme/u2", held_u2), ("acme/u1", fresh_u1), ("acme/u1", event)]
    )
    releases = {item.note["id"]: item.channels for _, item in out if isinstance(item, Release)}
    assert releases == {"n1": ("webhook",), "n2": ("email",), "n3": ("email",)}
    [suppressed] = [item for _, item in out if isinstance(item, dict) and item is not event]
    assert (suppressed["notification_id"], suppressed["status"], suppressed["channel"]) == (
        "n1",
        "suppressed",
        "email",
    )
    assert suppressed["reason"] == "user opted out of email (checked again at release)"
    assert ("acme/u1", event) in out


def test_a_release_with_every_channel_refused_is_dropped_for_its_events(redis_server):
    settings = Settings(redis_url=redis_server.url, profile_cache_ttl_seconds=0)
    with ProfileStore(redis_server.url) as store:
        store.put({"tenant_id": "acme", "user_id": "u3", "opt_outs": {"categories": ["news"]}})
    digest = note("d1", "u3", metadata={"digest_of": "a,b"})
    out = ReleaseRecheck(settings)([("acme/u3", Release(digest, ("email",)))])
    assert [item["status"] for _, item in out] == ["suppressed"]


def test_without_redis_everything_passes_untouched():
    items = [("acme/u1", Release(note("n1", "u1", _holds=2), ("email",)))]
    assert ReleaseRecheck(Settings(redis_url=None))(items) is items
