"""RedisInboxConnector against a real ``redis-server`` (RedisServer), pub/sub included."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import orjson
import pytest
import redis.asyncio as redis

from connectors.base import Delivery, InvalidRequest, RetryableError, SendResult
from connectors.inapp.redis_inbox import RedisInboxConnector, inbox_key
from notiflow.devservices import RedisServer, free_port
from notiflow.settings import Settings

T = TypeVar("T")
IDS = ("acme", "user-1")
KEY = inbox_key(*IDS)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    yield redis_server.url

    async def flush() -> None:
        client = redis.Redis.from_url(redis_server.url)
        await client.flushall()
        await client.aclose()

    asyncio.run(flush())


@pytest.fixture
def inbox_delivery(make_delivery) -> Callable[..., Delivery]:
    def factory(**overrides: Any) -> Delivery:
        fields = {"channel": "in_app", "user_id": "user-1", "address": "user-1"}
        fields |= {"data": {"order": 42}, "subject": "Shipped", **overrides}
        return make_delivery(**fields)

    return factory


def with_inbox(url: str, scenario: Callable[[RedisInboxConnector], Awaitable[T]], **kw: Any):
    async def run() -> T:
        connector = RedisInboxConnector(url, **kw)
        await connector.open()
        try:
            return await scenario(connector)
        finally:
            await connector.close()

    return run()


def test_send_adds_entry_counts_unread_and_publishes_live(
    redis_url: str, inbox_delivery, run
) -> None:
    delivery = inbox_delivery(body="Your order is on its way", category="orders")

    async def scenario(inbox: RedisInboxConnector) -> tuple[SendResult, dict, list, int]:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        pubsub = client.pubsub()
        await pubsub.subscribe(f"{KEY}:live")
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        result = await inbox.send(delivery)
        live = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        entries = await inbox.read_inbox("acme", "user-1", 10)
        unread = await inbox.unread_count("acme", "user-1")
        await pubsub.aclose()
        await client.aclose()
        return result, live, entries, unread

    result, live, entries, unread = run(with_inbox(redis_url, scenario))
    assert result.detail == {"duplicate": False, "unread": 1}
    assert live is not None and live["channel"] == f"{KEY}:live"
    message = orjson.loads(live["data"])
    assert message["entry_id"] == result.provider_message_id
    assert message["id"] == delivery.notification_id
    assert message["data"] == {"order": 42} and message["unread"] == 1
    (entry,) = entries
    assert entry["entry_id"] == result.provider_message_id
    assert (entry["id"], entry["title"], entry["body"], entry["category"]) == (
        delivery.notification_id,
        "Shipped",
        "Your order is on its way",
        "orders",
    )
    assert entry["data"] == {"order": 42} and entry["read"] is False
    assert entry["created_at"].endswith("Z")
    assert unread == 1


def test_replayed_delivery_adds_nothing(redis_url: str, inbox_delivery, run) -> None:
    delivery = inbox_delivery()

    async def scenario(inbox: RedisInboxConnector) -> tuple[list, list, int, int]:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        pubsub = client.pubsub()
        await pubsub.subscribe(f"{KEY}:live")
        await pubsub.get_message(timeout=1)
        first = await inbox.send(delivery)
        replays = await inbox.send_batch([delivery, delivery], concurrency=2)
        again = await inbox.send(delivery)
        messages = []
        while msg := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3):
            messages.append(msg)
        length = await client.xlen(KEY)
        await pubsub.aclose()
        await client.aclose()
        return [first, *replays, again], messages, length, await inbox.unread_count(*IDS)

    results, messages, length, unread = run(with_inbox(redis_url, scenario))
    assert [r.detail["duplicate"] for r in results] == [False, True, True, True]
    assert len({r.provider_message_id for r in results}) == 1
    assert len(messages) == 1 and length == 1 and unread == 1


def test_batch_is_one_round_trip_and_per_user(redis_url: str, inbox_delivery, run) -> None:
    deliveries = [inbox_delivery(user_id=f"user-{i % 3}") for i in range(30)]
    deliveries.append(inbox_delivery(tenant_id=""))  # unusable: no tenant

    async def scenario(inbox: RedisInboxConnector) -> tuple[list, list[int]]:
        outcomes = await inbox.send_batch(deliveries, concurrency=8)
        counts = [await inbox.unread_count("acme", f"user-{i}") for i in range(3)]
        return outcomes, counts

    outcomes, counts = run(with_inbox(redis_url, scenario))
    assert all(isinstance(o, SendResult) for o in outcomes[:-1])
    assert isinstance(outcomes[-1], InvalidRequest)
    assert counts == [10, 10, 10]


def test_inbox_is_bounded_and_unread_stays_exact(redis_url: str, inbox_delivery, run) -> None:
    deliveries = [inbox_delivery() for _ in range(8)]

    async def scenario(inbox: RedisInboxConnector) -> tuple[int, list, int, int, int]:
        await inbox.send_batch(deliveries[:4], 4)
        marked = await inbox.mark_read(*IDS, [deliveries[0].notification_id])
        await inbox.send_batch(deliveries[4:], 4)  # trims the 4 oldest (one of them read)
        entries = await inbox.read_inbox(*IDS, 10)
        client = redis.Redis.from_url(redis_url)
        index_size = await client.hlen(f"{KEY}:ids")
        await client.aclose()
        return marked, entries, await inbox.unread_count(*IDS), index_size, len(entries)

    marked, entries, unread, index_size, length = run(
        with_inbox(redis_url, scenario, max_messages=4)
    )
    assert marked == 1
    assert [e["id"] for e in entries] == [d.notification_id for d in reversed(deliveries[4:])]
    assert unread == 4 and index_size == 4 and length == 4


def test_mark_read_is_idempotent_and_read_flags_show(redis_url: str, inbox_delivery, run) -> None:
    deliveries = [inbox_delivery() for _ in range(3)]
    ids = [d.notification_id for d in deliveries]

    async def scenario(inbox: RedisInboxConnector) -> tuple[list[int], list, int]:
        await inbox.send_batch(deliveries, 3)
        marks = [
            await inbox.mark_read(*IDS, ids[:2]),
            await inbox.mark_read(*IDS, ids[:2]),
            await inbox.mark_read(*IDS, ["unknown-id"]),
            await inbox.mark_read(*IDS, []),
        ]
        return marks, await inbox.read_inbox(*IDS, 10), await inbox.unread_count(*IDS)

    marks, entries, unread = run(with_inbox(redis_url, scenario))
    assert marks == [2, 0, 0, 0]
    assert {e["id"]: e["read"] for e in entries} == {ids[0]: True, ids[1]: True, ids[2]: False}
    assert unread == 1


def test_read_inbox_pages_with_before(redis_url: str, inbox_delivery, run) -> None:
    deliveries = [inbox_delivery() for _ in range(5)]

    async def scenario(inbox: RedisInboxConnector) -> tuple[list, list]:
        await inbox.send_batch(deliveries, 5)
        first = await inbox.read_inbox(*IDS, 2)
        rest = await inbox.read_inbox(*IDS, 10, before=first[-1]["entry_id"])
        return first, rest

    first, rest = run(with_inbox(redis_url, scenario))
    order = [e["id"] for e in first + rest]
    assert order == [d.notification_id for d in reversed(deliveries)]


def test_survives_script_cache_flush(redis_url: str, inbox_delivery, run) -> None:
    async def scenario(inbox: RedisInboxConnector) -> list:
        first = await inbox.send(inbox_delivery())
        client = redis.Redis.from_url(redis_url)
        await client.script_flush()
        await client.aclose()
        return [first, await inbox.send(inbox_delivery())]

    assert all(isinstance(r, SendResult) for r in run(with_inbox(redis_url, scenario)))


def test_unreachable_redis_is_retryable(inbox_delivery, run) -> None:
    connector = RedisInboxConnector(f"redis://127.0.0.1:{free_port()}/0", timeout=1)

    async def scenario() -> tuple[list, Exception | None]:
        await connector.open()
        try:
            outcomes = await connector.send_batch([inbox_delivery()], 1)
            try:
                await connector.read_inbox(*IDS)
            except RetryableError as error:
                return outcomes, error
            return outcomes, None
        finally:
            await connector.close()

    outcomes, read_error = run(scenario())
    assert isinstance(outcomes[0], RetryableError) and "redis_error" in outcomes[0].reason
    assert isinstance(read_error, RetryableError)


def test_unserializable_data_is_invalid(redis_url: str, inbox_delivery, run) -> None:
    async def scenario(inbox: RedisInboxConnector) -> list:
        return await inbox.send_batch([inbox_delivery(data={"x": object()})], 1)

    (outcome,) = run(with_inbox(redis_url, scenario))
    assert isinstance(outcome, InvalidRequest)


def test_from_settings_and_validation() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6399/0", inapp_max_messages=50)
    connector = RedisInboxConnector.from_settings(settings)
    assert (connector.channel, connector.provider) == ("in_app", "redis_inbox")
    assert connector.max_messages == 50
    with pytest.raises(ValueError):
        RedisInboxConnector("")
    with pytest.raises(ValueError):
        RedisInboxConnector("redis://x", max_messages=0)
