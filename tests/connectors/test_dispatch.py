"""The one retry policy, over real connectors and servers, with the Redis provider limiter."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from connectors.dispatch import Dispatcher, RetryPolicy
from connectors.provider_limits import ProviderLimiter
from connectors.webhook.standard import WebhookConnector
from notiflow.devservices import RedisServer

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, max_total_s=20)


@pytest.fixture(scope="module")
def redis_url():
    with RedisServer() as server:
        yield server.url


def hooks(make_delivery, receiver, n, path="/hook"):
    return [make_delivery(channel="webhook", address=receiver.url(path)) for _ in range(n)]


def statuses(result) -> Counter[str]:
    return Counter(e["status"] for e in result.events)


def test_retryable_then_sent_and_permanent_dead_lettered(
    run, webhook_receiver, webhook_secret, make_delivery
):
    webhook_receiver.script([503, 502])
    webhook_receiver.status_for_path("/gone", 410)
    dispatcher = Dispatcher({"webhook": WebhookConnector(webhook_secret)}, FAST)
    batch = hooks(make_delivery, webhook_receiver, 1) + hooks(
        make_delivery, webhook_receiver, 1, "/gone"
    )

    async def go():
        try:
            return await dispatcher.deliver(batch)
        finally:
            await dispatcher.close()

    result = run(go())
    assert statuses(result) == {"retrying": 2, "sent": 1, "failed": 1}
    sent = next(e for e in result.events if e["status"] == "sent")
    assert sent["attempt"] == 3 and sent["provider"] == "webhook"
    [letter] = result.dead_letters
    assert letter.kind == "delivery_failed" and "410" in letter.reason
    assert letter.context["delivery"]["address"].endswith("/gone")


def test_exhausted_attempts_are_dead_lettered(run, webhook_receiver, webhook_secret, make_delivery):
    webhook_receiver.status_for_path("/down", 500)
    dispatcher = Dispatcher({"webhook": WebhookConnector(webhook_secret)}, FAST)
    result = run(dispatcher.deliver(hooks(make_delivery, webhook_receiver, 2, "/down")))
    run(dispatcher.close())
    assert statuses(result) == {"retrying": 4, "failed": 2}
    assert all("gave up" in letter.reason for letter in result.dead_letters)


def test_missing_connector_is_dead_lettered(run, make_delivery):
    result = run(Dispatcher({}, FAST).deliver([make_delivery(channel="voice")]))
    assert statuses(result) == {"dead_lettered": 1}
    assert result.dead_letters[0].kind == "undeliverable"


def test_account_wide_rate_is_shared_by_two_workers(
    run, redis_url, webhook_receiver, webhook_secret, make_delivery
):
    """Two dispatchers (two workers) share 40 sends/s with a burst of 10: 90 sends ≥ 2 s."""

    async def go():
        workers = [
            Dispatcher(
                {"webhook": WebhookConnector(webhook_secret)},
                FAST,
                limiter=ProviderLimiter(redis_url, {"webhook": (40, 10)}, key_prefix="t-rate"),
            )
            for _ in range(2)
        ]
        import asyncio

        started = time.monotonic()
        results = await asyncio.gather(
            *(w.deliver(hooks(make_delivery, webhook_receiver, 45)) for w in workers)
        )
        elapsed = time.monotonic() - started
        for w in workers:
            await w.close()
        return results, elapsed

    results, elapsed = run(go())
    assert sum(statuses(r)["sent"] for r in results) == 90
    assert elapsed >= (90 - 10) / 40 * 0.95  # burst, then the shared rate
    assert webhook_receiver.count == 90


def test_429_pauses_the_provider_for_every_worker_without_burning_attempts(
    run, redis_url, webhook_receiver, webhook_secret, make_delivery
):
    webhook_receiver.throttle(retry_after=1, times=1)

    async def go():
        import asyncio

        def worker():
            limiter = ProviderLimiter(redis_url, {}, key_prefix="t-pause")
            return Dispatcher(
                {"webhook": WebhookConnector(webhook_secret)},
                RetryPolicy(max_attempts=1, max_total_s=20),
                limiter=limiter,
            )

        first, second = worker(), worker()
        throttled = asyncio.create_task(first.deliver(hooks(make_delivery, webhook_receiver, 1)))
        await asyncio.sleep(0.3)  # the 429 has paused the provider in Redis by now
        started = time.monotonic()
        other = await second.deliver(hooks(make_delivery, webhook_receiver, 1))
        waited = time.monotonic() - started
        result = await throttled
        await first.close()
        await second.close()
        return result, other, waited

    result, other, waited = run(go())
    assert statuses(result) == {"retrying": 1, "sent": 1}  # max_attempts=1, yet not failed
    assert statuses(other) == {"sent": 1}
    assert waited >= 0.4  # the second worker honoured the pause it never saw a 429 for


def test_limiter_outage_waits_instead_of_failing(
    run, webhook_receiver, webhook_secret, make_delivery
):
    with RedisServer() as server:
        url = server.url
    limiter = ProviderLimiter(url, {"webhook": (100, 100)}, key_prefix="t-down")
    policy = RetryPolicy(max_attempts=3, max_total_s=2.5)
    dispatcher = Dispatcher({"webhook": WebhookConnector(webhook_secret)}, policy, limiter=limiter)
    started = time.monotonic()
    result = run(dispatcher.deliver(hooks(make_delivery, webhook_receiver, 3)))
    run(dispatcher.close())
    assert time.monotonic() - started >= 2  # waited for Redis, not a tight loop
    assert statuses(result) == {"failed": 3}  # bounded by max_total_s, then dead-lettered
    assert all("rate limit" in letter.reason for letter in result.dead_letters)
    assert webhook_receiver.count == 0  # nothing slipped past the limiter
