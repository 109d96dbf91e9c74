from __future__ import annotations

import pickle

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.digest import Digest, DigestBuffer, DigestCollector, merge_held
from operators.events import stable_id
from operators.parse import parse_request
from operators.routing import TemplateStore, plan_deliveries

CFG = {"key": "comments", "window_s": 60, "max_items": 5}


def note(n: int = 0, **request):
    """A real internal note, via the request parser."""
    base = {
        "id": f"n-{n}",
        "tenant_id": "acme",
        "recipient": {"user_id": "u1", "email": "u1@example.test"},
        "category": "comments",
        "content": {"email": {"subject": f"New comment {n} by $author", "body": "..."}},
        "data": {"author": "Ada"},
        "created_at": "2026-03-01T10:00:00Z",
    }
    parsed = parse_request(
        orjson.dumps({**base, **request}), source=f"t/0/{n}", timestamp_ms=0, max_bytes=1 << 20
    )
    assert isinstance(parsed, dict), parsed
    return parsed


def test_window_flush_builds_one_routable_digest():
    collector = DigestCollector()
    state, ready = collector.add(None, note(1), CFG, now=100)
    state, ready2 = collector.add(state, note(2, priority="high"), CFG, now=130)
    assert ready == ready2 == []
    assert collector.next_due(state) == 160  # window runs from the first item
    assert collector.flush_due(state, now=159.9) == (state, [])
    state, ready = collector.flush_due(state, now=160)
    assert state is None  # last bucket flushed: discard
    [digest] = ready
    assert isinstance(digest, Digest) and digest.item_ids == ["n-1", "n-2"]
    out = digest.note
    assert set(out) == set(note())
    assert out["id"] == stable_id("digest", "acme", "u1", "comments", 100, "n-1")
    assert out["category"] == "digest" and out["priority"] == "high"
    assert out["key"] == "acme/u1" and out["recipient"]["email"] == "u1@example.test"
    assert out["data"]["count"] == 2 and out["data"]["digest_key"] == "comments"
    assert [i["title"] for i in out["data"]["items"]] == [
        "New comment 1 by Ada",
        "New comment 2 by Ada",
    ]
    assert out["metadata"]["digest_of"] == "n-1,n-2"
    assert out["content"]["email"]["subject"] == "You have 2 updates"
    assert "- New comment 1 by Ada\n- New comment 2 by Ada" in out["content"]["email"]["body"]
    assert out["requested_at_ms"] == note(1)["requested_at_ms"]


def test_max_items_flushes_at_once_and_next_bucket_gets_a_new_id():
    collector = DigestCollector()
    cfg = {**CFG, "max_items": 2}
    state, _ = collector.add(None, note(1), cfg, now=0)
    state, ready = collector.add(state, note(2), cfg, now=0)
    assert state is None and [d.item_ids for d in ready] == [["n-1", "n-2"]]
    state, _ = collector.add(state, note(3), cfg, now=0)
    state, ready2 = collector.add(state, note(4), cfg, now=0)
    assert ready2[0].note["id"] != ready[0].note["id"]  # same opened_at, different bucket


def test_several_keys_are_independent():
    collector = DigestCollector()
    state, _ = collector.add(None, note(1), CFG, now=0)
    state, _ = collector.add(state, note(2), {"key": "likes", "window_s": 10, "max_items": 9}, 5)
    assert collector.next_due(state) == 15
    state, ready = collector.flush_due(state, now=20)
    assert [d.note["data"]["digest_key"] for d in ready] == ["likes"]
    assert collector.next_due(state) == 60
    state, ready = collector.flush_all(state, key="comments")
    assert state is None and ready[0].item_ids == ["n-1"]
    assert collector.flush_all(None) == (None, [])


def test_flush_all_flushes_everything_earliest_first():
    collector = DigestCollector()
    state, _ = collector.add(None, note(1), CFG, now=0)
    state, _ = collector.add(state, note(2), {**CFG, "key": "b", "window_s": 1}, now=0)
    state, ready = collector.flush_all(state)
    assert state is None and [d.item_ids for d in ready] == [["n-2"], ["n-1"]]


def test_state_stays_small_per_item():
    collector = DigestCollector()
    huge = {"subject": "Big", "body": "x" * 30_000, "html": "<p>" + "y" * 60_000}
    state = None
    for n in range(100):
        data = {f"k{i}": "v" * 1000 for i in range(50)} | {"nested": {"a": list(range(500))}}
        big = note(n, content={"email": huge}, data=data)
        state, _ = collector.add(state, big, {**CFG, "max_items": 1000}, now=n)
    size = len(pickle.dumps(state))
    assert size < 100 * 2000, size  # whole notes would be ~9 MB
    assert isinstance(pickle.loads(pickle.dumps(state)), DigestBuffer)
    state = None
    for n in range(100):
        state, _ = collector.add(state, note(n), {**CFG, "max_items": 1000}, now=n)
    assert len(pickle.dumps(state)) < 100 * 200


def test_priority_channels_and_addresses_combine():
    collector = DigestCollector()
    state, _ = collector.add(None, note(1, priority="low", channels=["email"]), CFG, now=0)
    second = note(2, priority="critical", channels=["in_app", "email"])
    second["recipient"]["phone"] = "+15551234567"
    state, _ = collector.add(state, second, CFG, now=1)
    state, _ = collector.add(state, note(3, priority="normal"), CFG, now=2)
    _, [digest] = collector.flush_all(state)
    assert digest.note["priority"] == "critical"
    assert digest.note["channels"] == ["email", "in_app"]
    assert digest.note["recipient"]["phone"] == "+15551234567"


def test_campaign_metadata_is_kept_and_digest_of_is_truncated():
    collector = DigestCollector()
    state = None
    cfg = {**CFG, "max_items": 1000}
    for n in range(100):
        meta = {"campaign_id": "c-1", "variant": "B", "other": "x"}
        state, _ = collector.add(state, note(n, id=f"{n:040d}", metadata=meta), cfg, now=0)
    _, [digest] = collector.flush_all(state)
    metadata = digest.note["metadata"]
    assert metadata["campaign_id"] == "c-1" and metadata["variant"] == "B"
    assert "other" not in metadata
    assert len(metadata["digest_of"]) <= 1000 and metadata["digest_of"].endswith(" more")
    assert len(digest.item_ids) == 100


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"key": "", "window_s": 1, "max_items": 1},
        {**CFG, "window_s": 0},
        {**CFG, "max_items": 0},
    ],
)
def test_unusable_config_is_refused(cfg):
    with pytest.raises(ValueError):
        DigestCollector().add(None, note(1), cfg, now=0)


def test_merge_held_routes_like_any_note():
    held = [
        note(1, channels=["email", "sms"]),
        note(2, template="order_shipped", content=None, data={"price": "$5"}, priority="high"),
    ]
    held[0]["recipient"]["phone"] = "+15551234567"
    merged = merge_held(held, now=500)
    assert set(merged) == set(note()) and merged["data"]["digest_key"] == "quiet_hours"
    assert merged["priority"] == "high" and merged["data"]["count"] == 2
    deliveries, undeliverable = plan_deliveries(merged, TemplateStore())
    assert undeliverable == []
    by_channel = {d.channel: d for d in deliveries}
    assert by_channel["email"].subject == "You have 2 updates"
    assert "- order_shipped" in by_channel["email"].body
    assert by_channel["sms"].body.startswith("You have 2 updates: New comment 1 by Ada")


def test_merge_held_flattens_a_held_digest_and_keeps_dollars():
    collector = DigestCollector()
    state, _ = collector.add(None, note(1), CFG, now=0)
    _, [digest] = collector.flush_all(state)
    cheap = note(2, content={"email": {"subject": "Now $$5 off: $price"}}, data={"price": "$3"})
    merged = merge_held([digest.note, cheap], now=10)
    assert [i["id"] for i in merged["data"]["items"]] == ["n-1", "n-2"]
    [delivery], _ = plan_deliveries(merged, TemplateStore())
    assert "- Now $5 off: $3" in delivery.body


def test_merge_held_refuses_mixed_users_and_empty():
    with pytest.raises(ValueError):
        merge_held([], now=0)
    with pytest.raises(ValueError):
        merge_held([note(1), note(2, recipient={"user_id": "u2"})], now=0)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from("abc"), st.integers(1, 4), st.floats(0, 20)),
        st.tuples(st.just("tick"), st.floats(0, 30)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_every_item_lands_in_exactly_one_digest(steps):
    collector = DigestCollector()
    state, now, added, flushed = None, 0.0, [], []
    for n, step in enumerate(steps):
        if step[0] == "add":
            _, key, max_items, window_s = step
            cfg = {"key": key, "window_s": window_s + 0.1, "max_items": max_items}
            state, ready = collector.add(state, note(n), cfg, now)
            added.append(f"n-{n}")
        else:
            now += step[1]
            due = collector.next_due(state)
            state, ready = collector.flush_due(state, now)
            assert all(due is not None and due <= now for _ in ready)
        for digest in ready:
            assert [i["id"] for i in digest.note["data"]["items"]] == digest.item_ids
            assert 1 <= len(digest.item_ids) <= 4
        flushed += [i for digest in ready for i in digest.item_ids]
        assert state is None or state.buckets  # never an empty state kept
    state, ready = collector.flush_all(state)
    flushed += [i for digest in ready for i in digest.item_ids]
    assert state is None and sorted(flushed) == sorted(added)
