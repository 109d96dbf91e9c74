"""Failover, circuit breakers and the send ledger, over two real SMTP relays and Redis."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from connectors.circuit import BreakerPolicy
from connectors.dispatch import Dispatcher
from connectors.email.smtp import SmtpConnector
from connectors.ledger import SendLedger, ledger_key
from connectors.retry import RetryPolicy
from connectors.routing import ProviderRoutes
from notiflow import metrics
from notiflow.devservices import RedisServer, SmtpCatcher

DEAD, LIVE = "dEaD" + "x" * 150, "LiVe" + "y" * 150  # FCM registration-token shaped
FAST = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02, max_total_s=20)
_names = itertools.count()


def relay(catcher: SmtpCatcher, name: str) -> SmtpConnector:
    """An SMTP connector registered under its own provider name (breakers are per name)."""
    cls = type(f"Relay{name}", (SmtpConnector,), {"provider": name})
    return cls(catcher.host, catcher.port, pool_size=2)


@pytest.fixture
def relays():
    with SmtpCatcher() as primary, SmtpCatcher() as backup:
        n = next(_names)
        yield primary, backup, relay(primary, f"primary{n}"), relay(backup, f"backup{n}")


@pytest.fixture(scope="module")
def redis_url():
    with RedisServer() as server:
        yield server.url


def emails(make_delivery, n):
    return [make_delivery(address=f"user{i}@example.org") for i in range(n)]


async def deliver_rounds(dispatcher: Dispatcher, *rounds, pause_before: dict | None = None):
    """Deliver each batch on one event loop (pools belong to their loop), then close."""
    import asyncio

    results = []
    try:
        for index, batch in enumerate(rounds):
            if pause_before and index in pause_before:
                await asyncio.sleep(pause_before[index])
            results.append(await dispatcher.deliver(batch))
    finally:
        await dispatcher.close()
    return results


def statuses(result) -> Counter[str]:
    return Counter(e["status"] for e in result.events)


def test_failover_to_the_backup_relay(run, relays, make_delivery):
    primary, backup, first, second = relays
    primary.fail_next(100, code=451)
    dispatcher = Dispatcher(ProviderRoutes([first, second]), FAST)
    [result] = run(deliver_rounds(dispatcher, emails(make_delivery, 5)))
    assert statuses(result) == {"retrying": 5, "failed_over": 5, "sent": 5}
    assert {e["provider"] for e in result.events if e["status"] == "sent"} == {second.provider}
    assert backup.count == 5 and primary.count == 0
    assert all("trying" in e["reason"] for e in result.events if e["status"] == "failed_over")


def test_permanent_recipient_errors_do_not_fail_over(run, relays, make_delivery):
    primary, backup, first, second = relays
    primary.refuse("user0@example.org", code=550)
    dispatcher = Dispatcher(ProviderRoutes([first, second]), FAST)
    [result] = run(deliver_rounds(dispatcher, emails(make_delivery, 2)))
    assert statuses(result) == {"failed": 1, "sent": 1}
    assert backup.count == 0 and len(result.dead_letters) == 1


def test_breaker_opens_skips_the_provider_then_closes(run, relays, make_delivery):
    primary, _backup, first, second = relays
    policy = BreakerPolicy(window_s=30, min_calls=4, failure_ratio=0.5, cooldown_s=0.5, probes=1)
    dispatcher = Dispatcher(
        ProviderRoutes([first, second]),
        RetryPolicy(max_attempts=1, max_total_s=20),
        breaker_policy=policy,
    )
    primary.fail_next(4, code=421)
    first_round, second_round, third_round = run(
        deliver_rounds(
            dispatcher,
            emails(make_delivery, 4),
            emails(make_delivery, 3),
            emails(make_delivery, 1),
            pause_before={2: 0.6},  # cooldown: one probe to the primary
        )
    )
    assert statuses(first_round)["circuit_opened"] == 1
    assert statuses(second_round) == {"failed_over": 3, "sent": 3}  # straight to the backup
    assert statuses(third_round) == {"circuit_half_open": 1, "sent": 1, "circuit_closed": 1}
    assert primary.count == 1
    assert metrics.CIRCUIT_STATE.labels(provider=first.provider)._value.get() == 0


def test_ledger_prevents_a_resend_and_reemits_the_same_event(run, relays, redis_url, make_delivery):
    primary, _backup, first, _second = relays
    batch = emails(make_delivery, 4)
    ledger_prefix = f"t{next(_names)}"

    async def deliver_twice():
        results = []
        for _ in range(2):  # the second time is a replay after a crash
            dispatcher = Dispatcher(
                ProviderRoutes([first]), FAST, ledger=SendLedger(redis_url, prefix=ledger_prefix)
            )
            fresh = [type(d)(**{k: getattr(d, k) for k in d.__slots__}) for d in batch]
            results.append(await dispatcher.deliver(fresh))
            await dispatcher.close()
        return results

    original, replay = run(deliver_twice())
    assert primary.count == 4  # not 8
    sent = lambda r: sorted((e["event_id"], e["latency_ms"]) for e in r.events)  # noqa: E731
    assert sent(original) == sent(replay)  # identical events: analytics count them once
    assert metrics.LEDGER_SKIPPED._value.get() >= 4


def test_in_flight_at_a_crash_can_be_skipped_instead(run, relays, redis_url, make_delivery):
    import redis

    primary, _backup, first, _second = relays
    prefix = f"t{next(_names)}"
    [delivery] = emails(make_delivery, 1)
    redis.Redis.from_url(redis_url).set(ledger_key(prefix, delivery), "sending")  # a crash
    ledger = SendLedger(redis_url, prefix=prefix, in_flight="skip")
    [result] = run(
        deliver_rounds(Dispatcher(ProviderRoutes([first]), FAST, ledger=ledger), [delivery])
    )
    assert statuses(result) == {"failed": 1} and primary.count == 0
    assert "outcome unknown" in result.events[0]["reason"]
    assert result.dead_letters[0].kind == "outcome_unknown"
    ledger = SendLedger(redis_url, prefix=prefix, in_flight="skip")  # a later replay
    [again] = run(
        deliver_rounds(Dispatcher(ProviderRoutes([first]), FAST, ledger=ledger), [delivery])
    )
    assert primary.count == 0 and again.dead_letters == []  # still not sent, not re-queued
    assert [e["event_id"] for e in again.events] == [e["event_id"] for e in result.events]


def test_claimed_but_never_started_is_sent(run, relays, redis_url, make_delivery):
    import redis

    primary, _backup, first, _second = relays
    prefix = f"t{next(_names)}"
    [delivery] = emails(make_delivery, 1)
    redis.Redis.from_url(redis_url).set(ledger_key(prefix, delivery), "claimed")
    before = metrics.LEDGER_UNKNOWN._value.get()
    ledger = SendLedger(redis_url, prefix=prefix, in_flight="skip")
    [result] = run(
        deliver_rounds(Dispatcher(ProviderRoutes([first]), FAST, ledger=ledger), [delivery])
    )
    assert statuses(result) == {"sent": 1} and primary.count == 1  # never started: safe
    assert metrics.LEDGER_UNKNOWN._value.get() == before


def test_claimed_but_unconfirmed_is_resent_and_counted(run, relays, redis_url, make_delivery):
    import redis

    primary, _backup, first, _second = relays
    prefix = f"t{next(_names)}"
    [delivery] = emails(make_delivery, 1)
    redis.Redis.from_url(redis_url).set(ledger_key(prefix, delivery), "sending")  # a crash
    before = metrics.LEDGER_UNKNOWN._value.get()
    dispatcher = Dispatcher(
        ProviderRoutes([first]), FAST, ledger=SendLedger(redis_url, prefix=prefix)
    )
    [result] = run(deliver_rounds(dispatcher, [delivery]))
    assert statuses(result) == {"sent": 1} and primary.count == 1
    assert metrics.LEDGER_UNKNOWN._value.get() == before + 1


def test_final_failure_releases_the_claim(run, relays, redis_url, make_delivery):
    import redis

    primary, _backup, first, _second = relays
    prefix = f"t{next(_names)}"
    primary.refuse("user0@example.org", code=550)
    [delivery] = emails(make_delivery, 1)
    dispatcher = Dispatcher(
        ProviderRoutes([first]), FAST, ledger=SendLedger(redis_url, prefix=prefix)
    )
    run(deliver_rounds(dispatcher, [delivery]))
    assert redis.Redis.from_url(redis_url).get(ledger_key(prefix, delivery)) is None


def test_dead_push_token_is_invalidated_and_removed(run, redis_url, make_delivery):
    from connectors.push.fcm import FcmConnector
    from connectors.push.router import PushRouter
    from connectors.tokens import TokenStore
    from notiflow.devservices.fcm_api import FcmApi

    with FcmApi(project_id="p") as api:
        fcm = FcmConnector("p", api.credentials(), base_url=api.base_url, timeout=5)
        api.kill_token(DEAD)
        tokens = TokenStore(redis_url)
        deliveries = [
            make_delivery(channel="push", address=f"fcm:{t}", user_id="u-push")
            for t in (DEAD, LIVE)
        ]

        async def go():
            await tokens.add("acme", "u-push", f"fcm:{DEAD}", f"fcm:{LIVE}")
            dispatcher = Dispatcher(
                ProviderRoutes([PushRouter({"fcm": fcm})]), FAST, tokens=TokenStore(redis_url)
            )
            [result] = await deliver_rounds(dispatcher, deliveries)
            remaining = await tokens.list("acme", "u-push")
            await tokens.close()
            return result, remaining

        result, remaining = run(go())
    assert statuses(result) == {"token_invalidated": 1, "sent": 1}
    assert {e["provider"] for e in result.events} == {"fcm"}  # the platform, not "push"
    assert remaining == {f"fcm:{LIVE}"} and result.dead_letters == []
