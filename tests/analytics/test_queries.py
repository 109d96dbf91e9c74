"""Every query in sql/queries/ against the seeded events (tests/analytics/seed.py) in chDB.

The seed is inserted twice, as a replay would, so every expected answer also proves that
replayed events count once. Expected values are counted by hand from the seed's docstring.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from notiflow import clickhouse as ch
from notiflow import queries
from notiflow.kafka.clickhouse_sink import backfill_rollups
from tests.analytics.seed import AB_T0, DAY, T0, ab_events, seed_events


@pytest.fixture(scope="module")
def seeded(client: Client) -> str:
    name = "analytics_queries"
    ch.migrate(client, name)
    ch.insert_events(client, name, seed_events())
    ch.insert_events(client, name, seed_events())  # a replay: counted once everywhere
    assert backfill_rollups(client, name) > 0  # rollups for throughput, from the raw events
    return name


@pytest.fixture(scope="module")
def ab_seeded(client: Client) -> str:
    """The experiment set (``seed.ab_events``) in its own database, also inserted twice."""
    name = "analytics_queries_ab"
    ch.migrate(client, name)
    ch.insert_events(client, name, ab_events())
    ch.insert_events(client, name, ab_events())
    return name


def rows(client: Client, database: str, name: str, **params: object) -> list[tuple]:
    return queries.run(client, database, name, **params).rows


def test_every_query_is_documented_and_bound(seeded: str) -> None:
    assert len(queries.names()) >= 12
    for name in queries.names():
        text = queries.sql(name)
        assert text.startswith("-- "), name
        assert "?" in queries.description(name), name  # says which question it answers
        assert "{database:Identifier}" in text, name
        assert "%s" not in text and "{}" not in text, name  # nothing formatted client-side


def test_delivery_funnel(client: Client, seeded: str) -> None:
    result = queries.run(client, seeded, "delivery_funnel")
    assert result.columns[:7] == (
        "channel", "provider", "accepted", "sent", "delivered", "opened", "clicked"
    )  # fmt: skip
    assert [row[:7] for row in result.rows] == [
        ("email", "", 1, 0, 0, 0, 0),  # n5: dead-lettered before a provider
        ("email", "smtp", 3, 2, 2, 1, 1),  # n1, n2, n4
        ("push", "", 1, 0, 0, 0, 0),  # n9: held, expired
        ("push", "fcm", 1, 0, 0, 0, 0),  # n10: token invalid
        ("sms", "", 1, 0, 0, 0, 0),  # n7: deferred
        ("sms", "vonage", 1, 1, 1, 0, 0),  # n3: failed over from twilio to vonage
        ("webhook", "webhook", 1, 1, 0, 0, 0),  # g1
    ]
    smtp = result.dicts()[1]
    assert (smtp["sent_rate"], smtp["opened_rate"]) == (0.6667, 0.3333)
    acme_sms = rows(client, seeded, "delivery_funnel", tenant="acme", channel="sms")
    assert [row[:4] for row in acme_sms] == [("sms", "", 1, 0), ("sms", "vonage", 1, 1)]
    later = rows(client, seeded, "delivery_funnel", since=T0 + timedelta(hours=1))
    assert [row[:4] for row in later] == [("webhook", "webhook", 1, 1)]


def test_provider_outcomes(client: Client, seeded: str) -> None:
    assert rows(client, seeded, "provider_outcomes") == [
        ("email", "smtp", 2, 1, 0, 1, 0, 0, 0.6667, 0.3333),
        ("push", "fcm", 0, 1, 0, 0, 0, 1, 0.0, 1.0),
        ("sms", "twilio", 0, 0, 1, 0, 0, 0, 0.0, 1.0),
        ("sms", "vonage", 1, 0, 0, 0, 0, 0, 1.0, 0.0),
        ("webhook", "webhook", 1, 0, 0, 0, 0, 0, 1.0, 0.0),
    ]
    until = rows(client, seeded, "provider_outcomes", until=T0 + timedelta(seconds=14))
    assert until == [("email", "smtp", 2, 0, 0, 1, 0, 0, 1.0, 0.0)]  # n1, n2 only


def test_failure_reasons(client: Client, seeded: str) -> None:
    result = queries.run(client, seeded, "failure_reasons")
    assert [row[:7] for row in result.rows] == [
        ("fcm", "push", "failed", "UNREGISTERED", 1, 1, 0.5),
        ("fcm", "push", "token_invalidated", "UNREGISTERED", 1, 1, 0.5),
        ("smtp", "email", "failed", "550 mailbox unavailable", 1, 1, 0.5),
        ("smtp", "email", "retrying", "421 try later", 1, 1, 0.5),
        ("twilio", "sms", "failed_over", "30003 unreachable", 1, 1, 1.0),
    ]
    first_seen = result.dicts()[2]["first_seen"]
    assert first_seen == (T0 + timedelta(seconds=35)).replace(tzinfo=None)
    assert rows(client, seeded, "failure_reasons", tenant="globex") == []


def test_dlq_reasons(client: Client, seeded: str) -> None:
    result = queries.run(client, seeded, "dlq_reasons")
    assert [row[:5] for row in result.rows] == [
        ("dead_lettered", "no email address", 1, 1, "n5"),
        ("failed", "550 mailbox unavailable", 1, 1, "n4"),
        ("failed", "UNREGISTERED", 1, 1, "n10"),
        ("rejected", "recipient.user_id: required", 1, 1, "n6"),
    ]
    assert [row[0] for row in rows(client, seeded, "dlq_reasons", channel="")] == ["rejected"]


def test_latency_accept_to_sent(client: Client, seeded: str) -> None:
    # waits: n1 email 1000 ms, n2 email 3000 ms, n3 sms 3000 ms, g1 webhook 200 ms
    assert rows(client, seeded, "latency_accept_to_sent") == [
        ("email", 2, [2000.0, 2900.0, 2980.0]),
        ("sms", 1, [3000.0, 3000.0, 3000.0]),
        ("webhook", 1, [200.0, 200.0, 200.0]),
        (None, 4, [2000.0, 3000.0, 3000.0]),
    ]
    (only,) = [r for r in rows(client, seeded, "latency_accept_to_sent", tenant="globex") if r[0]]
    assert only == ("webhook", 1, [200.0, 200.0, 200.0])
    empty = rows(client, seeded, "latency_accept_to_sent", tenant="nobody")
    assert len(empty) == 1 and empty[0][1] == 0 and all(math.isnan(v) for v in empty[0][2])


def test_cost(client: Client, seeded: str) -> None:
    assert rows(client, seeded, "cost") == [
        ("tenant/channel/category", "acme", "email", "orders", 2, 0.002, 0.001),
        ("tenant/channel/category", "acme", "sms", "marketing", 1, 0.0068, 0.0068),
        ("tenant/channel/category", "globex", "webhook", "alerts", 1, 0.0, 0.0),
        ("tenant", "acme", None, None, 3, 0.0088, 0.002933),
        ("tenant", "globex", None, None, 1, 0.0, 0.0),
        ("channel", None, "email", None, 2, 0.002, 0.001),
        ("channel", None, "sms", None, 1, 0.0068, 0.0068),
        ("channel", None, "webhook", None, 1, 0.0, 0.0),
        ("total", None, None, None, 4, 0.0088, 0.0022),
    ]
    day_one = rows(client, seeded, "cost", since=T0, until=T0 + DAY, channel="email")
    assert day_one[-1] == ("total", None, None, None, 2, 0.002, 0.001)


def test_suppression(client: Client, seeded: str) -> None:
    assert rows(client, seeded, "suppression") == [
        ("deduplicated", "duplicate id", 1, 1, 1),
        ("deferred", "sms cap 3/h", 1, 1, 1),
        ("expired", "ttl 1h", 1, 1, 1),
        ("held_quiet_hours", "22:00-07:00", 1, 1, 1),
    ]
    assert [r[0] for r in rows(client, seeded, "suppression", channel="push")] == [
        "expired",
        "held_quiet_hours",
    ]


def test_notification_trace(client: Client, seeded: str) -> None:
    result = queries.run(client, seeded, "notification_trace", notification_id="n3")
    trace = [(r["status"], r["channel"], r["provider"], r["reason"]) for r in result.dicts()]
    assert trace == [
        ("accepted", "", "", ""),
        ("failed_over", "sms", "twilio", "30003 unreachable"),
        ("sent", "sms", "vonage", ""),
        ("delivered", "sms", "vonage", ""),
    ]
    user = queries.run(client, seeded, "notification_trace", user_id="u1", tenant="acme").dicts()
    assert [(r["notification_id"], r["status"]) for r in user] == [
        ("n1", "accepted"),
        ("n1", "sent"),
        ("n1", "delivered"),
        ("n5", "accepted"),
        ("n5", "dead_lettered"),
        ("n7", "accepted"),  # same millisecond as n1 opened: pipeline order breaks the tie
        ("n1", "opened"),
        ("n7", "deferred"),
        ("n1", "clicked"),
    ]
    why = queries.run(client, seeded, "notification_trace", notification_id="n5", user_id="u1")
    assert why.dicts()[-1]["reason"] == "no email address"
    assert rows(client, seeded, "notification_trace") == []  # neither id given: nothing


def test_variant_comparison(client: Client, seeded: str) -> None:
    assert rows(client, seeded, "variant_comparison") == [
        ("c1", "A", 2, 2, 2, 1, 1, 1.0, 1.0, 0.5, 0.5),
        ("c1", "B", 2, 1, 1, 0, 0, 0.5, 0.5, 0.0, 0.0),
    ]
    assert rows(client, seeded, "variant_comparison", campaign_id="c9") == []
    email_only = rows(client, seeded, "variant_comparison", channel="email")
    assert [r[:4] for r in email_only] == [("c1", "A", 1, 1), ("c1", "B", 2, 1)]


def test_ab_variants(client: Client, ab_seeded: str) -> None:
    result = queries.run(client, ab_seeded, "ab_variants")
    assert result.columns == (
        "experiment", "variant", "notifications", "sent", "delivered", "opened", "clicked",
        "failed", "suppressed", "delivery_rate", "open_rate", "click_rate", "baseline",
        "open_z", "open_significant", "click_z", "click_significant",
    )  # fmt: skip
    assert [row[:12] for row in result.rows] == [
        ("subject", "long", 50, 50, 50, 10, 0, 0, 0, 1.0, 0.2, 0.0),
        ("subject", "short", 50, 50, 50, 20, 5, 0, 0, 1.0, 0.4, 0.1),
        # a3 bounced (failed), a4 suppressed; b3 failed over to SMS (delivered), b5 failed
        ("welcome", "control", 4, 3, 2, 1, 0, 1, 1, 0.5, 0.25, 0.0),
        ("welcome", "v2", 5, 4, 4, 3, 1, 1, 0, 0.8, 0.6, 0.2),
    ]
    assert [row[12:] for row in result.rows] == [
        # no 'control': the first variant by name is the baseline; 10/50 vs 20/50 opened,
        # pooled p = 0.3, z = 0.2 / sqrt(0.3 * 0.7 * (1/50 + 1/50)) = 2.18
        ("long", None, None, None, None),
        ("long", 2.18, True, 2.29, True),
        ("control", None, None, None, None),
        # 1/4 vs 3/5 opened: pooled p = 4/9, z = 0.35 / sqrt(4/9 * 5/9 * (1/5 + 1/4)) = 1.05
        ("control", 1.05, False, 0.95, False),
    ]
    welcome = rows(client, ab_seeded, "ab_variants", experiment="welcome")
    assert [r[:3] for r in welcome] == [("welcome", "control", 4), ("welcome", "v2", 5)]
    assert [r[1] for r in rows(client, ab_seeded, "ab_variants", tenant="globex")] == [
        "long",
        "short",
    ]
    # a1..b5 were requested in the first 9 seconds
    later = rows(client, ab_seeded, "ab_variants", since=AB_T0 + timedelta(seconds=9))
    assert [r[:3] for r in later] == [("subject", "long", 50), ("subject", "short", 50)]
    assert rows(client, ab_seeded, "ab_variants", experiment="nope") == []


def test_strategy_comparison(client: Client, ab_seeded: str) -> None:
    result = queries.run(client, ab_seeded, "strategy_comparison")
    assert result.columns == (
        "strategy", "notifications", "messages_sent", "sent", "delivered", "opened", "clicked",
        "failed", "delivery_rate", "open_rate", "click_rate", "messages_per_notification",
        "cost_usd", "cost_per_notification",
    )  # fmt: skip
    assert result.rows == [
        # a1..a3 (a4 was suppressed before a strategy); a2 went to email and push
        ("immediate", 3, 4, 3, 2, 1, 0, 1, 0.6667, 0.3333, 0.0, 1.3333, 0.003, 0.001),
        # b1..b5: one message each except b5 (none sent); b3's SMS costs $0.0079
        ("sequential", 5, 4, 4, 4, 3, 1, 1, 0.8, 0.6, 0.2, 0.8, 0.0109, 0.00218),
        ("smart", 100, 100, 100, 100, 30, 5, 0, 1.0, 0.3, 0.05, 1.0, 0.1, 0.001),
    ]
    acme = rows(client, ab_seeded, "strategy_comparison", tenant="acme")
    assert [r[:2] for r in acme] == [("immediate", 3), ("sequential", 5)]
    assert rows(client, ab_seeded, "strategy_comparison", until=AB_T0) == []


def test_tenant_usage(client: Client, seeded: str) -> None:
    assert rows(client, seeded, "tenant_usage") == [
        ("acme", "", 8, 1, 0, 0, 0, 0.0),
        ("acme", "email", 0, 0, 2, 2, 0, 0.002),
        ("acme", "push", 0, 0, 0, 0, 0, 0.0),
        ("acme", "sms", 0, 0, 1, 1, 2, 0.0068),
        ("globex", "", 1, 0, 0, 0, 0, 0.0),
        ("globex", "webhook", 0, 0, 1, 0, 0, 0.0),
    ]
    november_21 = rows(client, seeded, "tenant_usage", since=T0 + DAY - timedelta(hours=1))
    assert [r[:3] for r in november_21] == [("globex", "", 1), ("globex", "webhook", 0)]


def test_throughput_from_rollups(client: Client, seeded: str) -> None:
    hour = T0.replace(tzinfo=None)
    assert rows(client, seeded, "throughput", bucket_seconds=3600) == [
        (hour, "accepted", 8, 0),
        (hour, "delivered", 5, 0),
        (hour, "failed", 4, 0),
        (hour, "held", 2, 0),
        (hour, "other", 2, 0),
        (hour, "sent", 3, 0),
        (hour, "suppressed", 3, 0),
        (hour + DAY, "accepted", 1, 0),
        (hour + DAY, "sent", 1, 0),
    ]
    minutes = rows(client, seeded, "throughput", bucket_seconds=60, tenant="acme", channel="sms")
    assert minutes == [
        (hour, "delivered", 1, 0),
        (hour, "other", 1, 0),
        (hour, "sent", 1, 0),
        (hour + timedelta(minutes=1), "held", 1, 0),  # n7 deferred at 10:01:00.5
    ]


def test_summary_still_answers(client: Client, seeded: str) -> None:
    result = queries.run(client, seeded, "delivery_summary")
    total = [row for row in result.rows if row[2] == 3]
    assert total[0][3] == 29


def test_parameters_are_checked_and_bound(client: Client, seeded: str) -> None:
    with pytest.raises(ValueError, match="unknown parameters"):
        queries.run(client, seeded, "cost", tenat="acme")
    with pytest.raises(ValueError, match="missing required parameters"):
        queries.run(client, seeded, "throughput")
    with pytest.raises(KeyError):
        queries.sql("../0001_create_delivery_events")
    hostile = rows(client, seeded, "tenant_usage", tenant="acme' OR 1=1 --")
    assert hostile == []
    naive = rows(client, seeded, "tenant_usage", since=datetime(2026, 11, 21, 9, 0))
    assert [r[0] for r in naive] == ["globex", "globex"]
    assert queries.run_filtered(client, seeded, "tenant_usage", channel="sms").rows[0][0] == "acme"
