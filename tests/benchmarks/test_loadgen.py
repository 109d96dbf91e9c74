"""The load generator: repeatable, self-contained blocks, expectations that match the records."""

from __future__ import annotations

from collections import Counter

import orjson

from benchmarks.loadgen import Mix, generate, parse_channels

URL = "http://127.0.0.1:9/hook"


def _docs(records):
    for key, value in records:
        try:
            yield key, orjson.loads(value)
        except orjson.JSONDecodeError:
            yield key, None


def test_same_seed_same_records_and_blocks_are_independent():
    a = generate(Mix(seed=3), 4, URL, now=1_800_000_000)
    b = generate(Mix(seed=3), 4, URL, now=1_800_000_000)
    assert a.take(0, 4)[0] == b.take(0, 4)[0]
    assert generate(Mix(seed=3), 2, URL, now=1_800_000_000).take(0, 2)[0] == a.take(0, 2)[0]
    assert generate(Mix(seed=4), 1, URL, now=1_800_000_000).take(0, 1)[0] != a.take(0, 1)[0]


def test_expectation_matches_the_records():
    work = generate(Mix(seed=5), 5, URL, now=1_800_000_000)
    for block in work.blocks:
        seen: set[str] = set()
        ids = Counter()
        channels: Counter[str] = Counter()
        malformed = scheduled = campaigns = 0
        for key, doc in _docs(block.records):
            if key is None:  # malformed records are produced without a key
                malformed += 1
                continue
            if "audience" in doc:
                campaigns += 1
                channels.update({c: len(doc["audience"]["user_ids"]) for c in doc["channels"]})
                continue
            ids[doc["id"]] += 1
            if doc["id"] in seen:  # an id duplicate follows its original in the block
                continue
            seen.add(doc["id"])
            scheduled += "send_at" in doc
        e = block.expect
        assert e.records == len(block.records) >= 1000
        assert malformed == e.malformed
        assert sum(n - 1 for n in ids.values()) == e.id_duplicates
        assert scheduled == e.scheduled
        assert campaigns == e.campaigns
        assert e.units == (
            e.malformed
            + e.id_duplicates
            + e.content_duplicates
            + e.scheduled
            + e.quiet
            + e.digest_items
            + sum(e.deliveries.values())
        )
    total = work.take(0, 5)[1]
    assert 0.03 < total.id_duplicates / total.records < 0.05
    assert 0.005 < total.malformed / total.records < 0.015


def test_users_are_zipf_skewed_and_channels_follow_the_weights():
    work = generate(Mix(seed=7, channels=parse_channels("email=0.5,sms=0.5")), 10, URL)
    users: Counter[str] = Counter()
    for key, doc in _docs(work.take(0, 10)[0]):
        if key and doc and "recipient" in doc:
            users[doc["recipient"]["user_id"]] += 1
    top_share = users.most_common(1)[0][1] / sum(users.values())
    assert 0.02 < top_share < 0.15  # rank 1 of 1M under exponent 1: ~5 %
    assert len(users) > 3000
    assert set(work.take(0, 10)[1].deliveries) == {"email", "sms"}
