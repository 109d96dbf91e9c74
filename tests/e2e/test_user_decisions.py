"""Issue-3 behaviours through the real broker and a running engine: content dedup, caps
(drop and defer), schedule, expiry, quiet hours, digests and campaign splitting (an explicit
audience and a Redis segment)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from notiflow.devservices import RedisServer
from notiflow.engine import Engine
from notiflow.kafka.reader import TopicReader
from notiflow.producer import produce_all
from notiflow.segments import RedisSegments
from notiflow.settings import Settings

LIMITS = {
    "default": {
        "action": "drop",
        "caps": [
            {"channel": "email", "category": "capped", "limit": 3, "window_s": 3600},
        ],
    },
    "tenants": {
        "acme/deferred": {
            "action": "defer",
            "caps": [
                {"channel": "email", "category": "deferred", "limit": 1, "window_s": 3},
            ],
        }
    },
}


def request(rid: str, user: str, **fields) -> tuple[bytes, bytes]:
    body = {
        "id": rid,
        "tenant_id": "acme",
        "recipient": {"user_id": user, "email": f"{user}@example.test"},
        "content": {"email": {"subject": f"subject {rid}", "body": f"body {rid}"}},
        **fields,
    }
    return f"acme/{user}".encode(), orjson.dumps(body)


def iso(moment: datetime) -> str:
    return moment.isoformat()


@pytest.fixture
def redis_url(monkeypatch):
    with RedisServer() as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        yield server.url


@pytest.mark.e2e
def emails(prefix: str, user: str, category: str, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` distinct emails ``{prefix}0..`` for ``user`` in ``category``."""
    return [
        request(
            f"{prefix}{i}",
            user,
            category=category,
            content={"email": {"subject": "s", "body": f"{prefix} {i}"}},
        )
        for i in range(count)
    ]


def test_per_user_decisions_through_the_engine(engine_env, smtp, redis_url, monkeypatch):
    monkeypatch.setenv("NOTIFLOW_RATE_LIMITS", orjson.dumps(LIMITS).decode())
    settings = Settings()
    kafka = {"bootstrap.servers": engine_env["KAFKA_BOOTSTRAP_SERVERS"]}
    RedisSegments(redis_url).add("acme", "beta-testers", [f"seg-{i}" for i in range(300)])

    def workload(now: datetime) -> list[tuple[bytes, bytes]]:
        """The records; times are relative to ``now``, taken once the engine runs."""
        quiet = f"{(now - timedelta(hours=1)):%H:%M}-{(now + timedelta(hours=2)):%H:%M}"
        audience = [
            {"user_id": f"camp-{i}", "email": f"camp-{i}@example.test"} for i in range(2500)
        ]
        return [
            # content dedup: same dedup_key twice, same body twice
            request("c1", "u-content", dedup_key="order-1"),
            request("c2", "u-content", dedup_key="order-1"),
            request("c3", "u-content2"),
            (
                b"acme/u-content2",
                orjson.dumps(
                    {
                        **orjson.loads(request("c4", "u-content2")[1]),
                        "id": "c4b",
                        "content": orjson.loads(request("c3", "u-content2")[1])["content"],
                    }
                ),
            ),
            # caps: 5 'capped' emails for one user -> 3 sent, 2 rate_limited
            *emails("cap", "u-cap", "capped", 5),
            # defer: 2 'deferred' emails, cap 1 per 3 s -> second deferred then sent
            *emails("def", "u-defer", "deferred", 2),
            # schedule: sent 3 s from now; expiry: scheduled past its ttl
            request("sched", "u-sched", send_at=iso(now + timedelta(seconds=3))),
            request("stale", "u-stale", send_at=iso(now + timedelta(seconds=2)), ttl_s=1),
            # quiet hours: held, not sent
            (
                b"acme/u-quiet",
                orjson.dumps(
                    {
                        "id": "quiet",
                        "tenant_id": "acme",
                        "recipient": {
                            "user_id": "u-quiet",
                            "email": "q@example.test",
                            "timezone": "UTC",
                            "quiet_hours": quiet,
                        },
                        "content": {"email": {"body": "shh"}},
                    }
                ),
            ),
            # digest: 4 items in a 2-second window -> one email listing them
            *[
                request(
                    f"dig{i}",
                    "u-digest",
                    digest={"key": "comments", "window_s": 2},
                    content={"email": {"subject": f"comment {i}", "body": "x"}},
                )
                for i in range(4)
            ],
            # campaigns: explicit audience with addresses, and a Redis segment (no addresses yet)
            (
                None,
                orjson.dumps(
                    {
                        "campaign_id": "spring",
                        "tenant_id": "acme",
                        "audience": {"user_ids": audience},
                        "channels": ["email"],
                        "content": {"email": {"subject": "Spring", "body": "Hi $user_id"}},
                    }
                ),
            ),
            (
                None,
                orjson.dumps(
                    {
                        "campaign_id": "beta",
                        "tenant_id": "acme",
                        "audience": {"segment": "beta-testers"},
                        "channels": ["email"],
                        "template": "welcome",
                        "data": {"name": "tester"},
                    }
                ),
            ),
        ]

    with Engine(settings) as engine:
        events = TopicReader(kafka, settings.events_topic)
        # The time-relative records are built once the flow demonstrably consumes (a warm-up
        # record has come out as its "rejected" event): a slow start-up must not eat the 3 s.
        produce_all(kafka, settings.requests_topic, [(None, b"warm-up: not a request")])
        assert events.wait_for(1, 90), "the engine never answered the warm-up record"
        records = workload(datetime.now(UTC))
        produce_all(kafka, settings.requests_topic, records)
        deadline = time.monotonic() + 120
        by_id: dict[str, list[dict]] = defaultdict(list)
        done = False
        while not done and time.monotonic() < deadline:
            events.poll(0.3)
            by_id.clear()
            for message in events.messages:
                event = orjson.loads(message.value())
                by_id[event["notification_id"]].append(event)
            statuses = Counter(e["status"] for evs in by_id.values() for e in evs)
            done = (
                statuses["sent"] >= 2500 + 3 + 2 + 1 + 1 + 2
                and statuses["dead_lettered"] >= 300
                and any(e["status"] == "sent" for e in by_id.get("sched", []))
                and any(e["status"] == "expired" for e in by_id.get("stale", []))
            )
        assert engine.poll() is None
        time.sleep(1)
        events.poll(0.5)
        events.close()

    def has(rid: str) -> list[str]:
        return [e["status"] for e in by_id[rid]]

    assert has("c1") == ["accepted", "sent"]
    assert has("c2") == ["deduplicated"] and "c1" in by_id["c2"][0]["reason"]
    assert has("c3") == ["accepted", "sent"] and has("c4b") == ["deduplicated"]
    caps = Counter(s for i in range(5) for s in has(f"cap{i}"))
    assert (caps["sent"], caps["rate_limited"]) == (3, 2)
    assert has("def0") == ["accepted", "sent"]
    assert has("def1")[:2] == ["accepted", "deferred"] and has("def1")[-1] == "sent"
    assert has("sched") == ["accepted", "scheduled", "sent"]
    assert has("stale")[0] == "accepted" and has("stale")[-1] == "expired"  # never sent
    assert has("quiet") == ["accepted", "held_quiet_hours"]
    assert all(has(f"dig{i}") == ["accepted", "digested"] for i in range(4))
    digest_id = by_id["dig0"][1]["reason"].removeprefix("in digest ")
    assert has(digest_id) == ["accepted", "sent"]
    digest_mail = [m.message for m in smtp.messages if m.rcpt_tos == ("u-digest@example.test",)]
    assert len(digest_mail) == 1 and "4 updates" in digest_mail[0]["Subject"]
    assert all(f"comment {i}" in digest_mail[0].get_body().get_content() for i in range(4))
    campaign_sent = {
        e["user_id"]
        for evs in by_id.values()
        for e in evs
        if e["status"] == "sent" and e.get("campaign_id") == "spring"
    }
    assert len(campaign_sent) == 2500
    segment_users = {
        e["user_id"]
        for evs in by_id.values()
        for e in evs
        if e.get("campaign_id") == "beta" and e["status"] == "dead_lettered"
    }
    assert segment_users == {f"seg-{i}" for i in range(300)}  # split; no address without a profile
    # campaign + capped + deferred + scheduled + content (c1, c3) + one digest; nothing else
    assert smtp.count == 2500 + 3 + 2 + 1 + 2 + 1
