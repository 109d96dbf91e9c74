from __future__ import annotations

import pickle

import pytest

from operators.campaign import CampaignCursor, CampaignSplitter, SegmentScan
from operators.events import stable_id
from operators.parse import parse_request

PARSED = parse_request(
    b'{"tenant_id": "acme", "recipient": {"user_id": "u"}, "template": "t"}',
    source="t/0/0",
    timestamp_ms=0,
    max_bytes=4096,
)


def campaign(audience, **overrides):
    base = {
        "campaign_id": "spring",
        "tenant_id": "acme",
        "audience": audience,
        "category": "marketing",
        "priority": "low",
        "channels": ["email"],
        "template": "welcome",
        "data": {"offer": "20%"},
        "metadata": {"variant": "B"},
        "requested_at_ms": 1_700_000_000_000,
    }
    return {**base, **overrides}


def drain(splitter, cursor, fetch=None):
    chunks = []
    while cursor is not None:
        cursor, notes = splitter.next_chunk(cursor, now=0, fetch_segment_page=fetch)
        chunks.append(notes)
    return chunks


def test_100k_users_in_100_chunks_each_once():
    users = [f"u{i}" for i in range(100_000)]
    splitter = CampaignSplitter()
    chunks = drain(splitter, splitter.start(campaign({"user_ids": users}), now=5))
    assert len(chunks) == 100 and {len(c) for c in chunks} == {1000}
    notes = [n for chunk in chunks for n in chunk]
    assert [n["user_id"] for n in notes] == users
    assert len({n["id"] for n in notes}) == 100_000
    first = notes[0]
    assert isinstance(PARSED, dict) and set(first) == set(PARSED)  # the parse.py shape
    assert first["id"] == stable_id("acme", "spring", "u0") and first["id_generated"] is True
    assert first["key"] == "acme/u0" and first["recipient"] == {"user_id": "u0"}
    assert first["metadata"] == {"variant": "B", "campaign_id": "spring"}
    assert first["source"] == "campaign:spring:0"
    assert notes[12_345]["source"] == "campaign:spring:12345"
    assert first["requested_at_ms"] == 1_700_000_000_000
    assert (first["category"], first["priority"], first["channels"]) == (
        "marketing",
        "low",
        ["email"],
    )


def test_resume_from_a_pickled_cursor_has_no_duplicates_or_gaps():
    users = [f"u{i}" for i in range(10_000)]
    splitter = CampaignSplitter(chunk_size=700)
    cursor = splitter.start(campaign({"user_ids": users}), now=5)
    emitted = []
    for _ in range(4):
        cursor, notes = splitter.next_chunk(cursor, now=0)
        emitted += notes
    snapshot = pickle.dumps(cursor)
    cursor, lost = splitter.next_chunk(cursor, now=0)  # emitted, then the worker crashed
    restored = pickle.loads(snapshot)
    replayed = [n for chunk in drain(splitter, restored) for n in chunk]
    assert replayed[: len(lost)] == lost  # same notes, same ids, same sources
    ids = [n["id"] for n in emitted + replayed]
    assert ids == [stable_id("acme", "spring", u) for u in users]


def test_restart_from_scratch_gives_the_same_ids():
    users = [f"u{i}" for i in range(50)]
    splitter = CampaignSplitter(chunk_size=7)
    once = drain(splitter, splitter.start(campaign({"user_ids": users}), now=1))
    twice = drain(splitter, splitter.start(campaign({"user_ids": users}), now=1))
    assert once == twice


def test_state_shrinks_as_it_advances():
    splitter = CampaignSplitter(chunk_size=1000)
    cursor = splitter.start(campaign({"user_ids": [f"user-{i}" for i in range(20_000)]}), 0)
    sizes = []
    while cursor is not None:
        sizes.append(len(pickle.dumps(cursor)))
        cursor, _ = splitter.next_chunk(cursor, now=0)
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert sizes[-1] < sizes[0] / 10


def test_dict_entries_are_recipients_and_repeats_are_dropped():
    audience = {
        "user_ids": [
            {"user_id": "u1", "email": "u1@example.test"},
            "u2",
            {"user_id": "u1", "email": "other@example.test"},
            "u2",
        ]
    }
    splitter = CampaignSplitter()
    cursor = splitter.start(campaign(audience), now=0)
    assert cursor.total == 2
    cursor, notes = splitter.next_chunk(cursor, now=0)
    assert cursor is None
    assert [n["recipient"] for n in notes] == [
        {"user_id": "u1", "email": "u1@example.test"},
        {"user_id": "u2"},
    ]
    notes[0]["metadata"]["x"] = "y"  # notes do not share mutable metadata
    assert "x" not in notes[1]["metadata"]


def fake_segment(members, page_size=3):
    """Test double for an SSCAN wrapper: fixed pages, a repeat, an empty page."""
    pages = [members[i : i + page_size] for i in range(0, len(members), page_size)]
    pages.insert(1, [])
    if len(pages) > 2:
        pages[2] = [*pages[2], members[0]]  # SSCAN may return an element twice
    calls = []

    def fetch(segment, token, count):
        calls.append((segment, token, count))
        index = token or 0
        following = index + 1 if index + 1 < len(pages) else None
        return following, [m.encode() if index % 2 else m for m in pages[index]]

    return fetch, calls


def test_segment_is_paged_through_the_injected_function():
    members = [f"s{i}" for i in range(20)]
    fetch, calls = fake_segment(members)
    splitter = CampaignSplitter(chunk_size=4)
    cursor = splitter.start(campaign({"segment": "vip"}), now=0)
    assert isinstance(cursor.audience_source, SegmentScan) and cursor.total is None
    chunks = drain(splitter, cursor, fetch)
    users = [n["user_id"] for chunk in chunks for n in chunk]
    assert sorted(set(users)) == sorted(members) and len(users) <= len(members) + 1
    assert all(len(chunk) <= 4 for chunk in chunks)
    assert calls[0] == ("vip", None, 4) and all(segment == "vip" for segment, _, _ in calls)
    notes = [n for chunk in chunks for n in chunk]
    assert [n["source"] for n in notes] == [f"campaign:spring:{i}" for i in range(len(notes))]


def test_segment_cursor_holds_only_the_token_and_overflow():
    members = [f"s{i}" for i in range(30)]
    fetch, _ = fake_segment(members, page_size=10)
    splitter = CampaignSplitter(chunk_size=4)
    cursor, notes = splitter.next_chunk(splitter.start(campaign({"segment": "vip"}), 0), 0, fetch)
    assert len(notes) == 4
    assert isinstance(cursor, CampaignCursor) and cursor.audience_source.pending == tuple(
        members[4:10]
    )
    resumed = drain(splitter, pickle.loads(pickle.dumps(cursor)), fetch)
    seen = [n["user_id"] for n in notes] + [n["user_id"] for c in resumed for n in c]
    assert set(seen) == set(members)


def test_segment_needs_a_page_function():
    splitter = CampaignSplitter()
    with pytest.raises(ValueError):
        splitter.next_chunk(splitter.start(campaign({"segment": "vip"}), 0), now=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"campaign_id": ""},
        {"tenant_id": None},
        {"audience": {}},
        {"audience": {"user_ids": ["a"], "segment": "s"}},
        {"audience": {"user_ids": ["a", {"email": "x@y.z"}]}},
        {"audience": {"user_ids": ["u"] * 100_001}},
        {"template": None},
        {"priority": "urgent"},
    ],
)
def test_unusable_campaigns_are_refused(bad):
    with pytest.raises(ValueError):
        CampaignSplitter().start(campaign({"user_ids": ["u1"]}) | bad, now=0)


def test_empty_audience_finishes_at_once_and_requested_at_defaults_to_start():
    splitter = CampaignSplitter()
    cursor = splitter.start(campaign({"user_ids": []}), now=0)
    assert splitter.next_chunk(cursor, now=0) == (None, [])
    cursor = splitter.start(campaign({"user_ids": ["u"]}, requested_at_ms=None), now=12.5)
    _, [only] = splitter.next_chunk(cursor, now=99)
    assert only["requested_at_ms"] == 12_500
