"""Shared harness for connector tests: real local servers and a delivery factory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from connectors.base import Delivery
from notiflow.devservices import SmtpCatcher, WebhookReceiver

T = TypeVar("T")

WEBHOOK_SECRET = "whsec_bm90aWZsb3ctdGVzdC1zZWNyZXQtMzItYnl0ZXMhIQ=="
#: Upper bound for one test's event-loop work, far above what a passing test needs.
RUN_TIMEOUT_S = 60.0


@pytest.fixture
def run() -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine to completion on a fresh event loop, bounded in time."""

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(coro, RUN_TIMEOUT_S)

        return asyncio.run(bounded())

    return runner


@pytest.fixture
def smtp_catcher() -> Iterator[SmtpCatcher]:
    with SmtpCatcher() as catcher:
        yield catcher


@pytest.fixture
def webhook_secret() -> str:
    return WEBHOOK_SECRET


@pytest.fixture
def webhook_receiver(webhook_secret: str) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=webhook_secret) as receiver:
        yield receiver


@pytest.fixture
def make_delivery() -> Callable[..., Delivery]:
    """Build a Delivery with sensible defaults; keyword arguments override fields."""
    counter = iter(range(1, 1_000_000))

    def factory(**overrides: Any) -> Delivery:
        n = next(counter)
        fields: dict[str, Any] = {
            "notification_id": f"ntf-{n:06d}",
            "tenant_id": "acme",
            "user_id": f"user-{n}",
            "channel": "email",
            "address": "alice@example.org",
            "subject": "Your order has shipped",
            "body": "Hello Alice, your order #42 is on its way.",
            "category": "orders",
        }
        fields.update(overrides)
        return Delivery(**fields)

    return factory
