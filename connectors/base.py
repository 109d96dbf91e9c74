"""The one small interface every provider connector implements, and its error vocabulary.

A connector makes exactly one attempt per call and classifies failures; what happens next
(retry with backoff, honour Retry-After, fail over, dead-letter) is decided by one policy in
``connectors.dispatch``, never inside a connector.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Delivery:
    """One rendered message for one channel address. Plain data; cheap to build."""

    notification_id: str
    tenant_id: str
    user_id: str
    channel: str
    address: str  # email address, E.164 number, token, or URL
    body: str
    subject: str | None = None
    html: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    category: str = "default"
    priority: str = "normal"
    metadata: dict[str, str] = field(default_factory=dict)
    requested_at_ms: float = 0.0
    attempt: int = 1


@dataclass(slots=True)
class SendResult:
    """A successful attempt."""

    provider_message_id: str | None = None
    cost_usd: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class ConnectorError(Exception):
    """Base of every error a connector raises. ``reason`` is short and machine-friendly."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RetryableError(ConnectorError):
    """Try again later (timeouts, 5xx, 429, connection resets). ``retry_after`` in seconds."""

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, status=status)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Retrying cannot help (invalid address, 4xx other than 408/429, auth refused)."""


class TokenInvalid(PermanentError):
    """The device token / subscription is dead (FCM UNREGISTERED, APNs 410, Web Push 404/410).

    The dispatcher reports ``token_invalidated`` and removes the token from the user's profile.
    """


class InvalidRequest(PermanentError):
    """The delivery itself is unusable (e.g. missing subject for a provider that needs one)."""


Outcome = SendResult | ConnectorError


class Connector(ABC):
    """A provider for one channel. Built in the worker process, then ``open()``-ed once.

    Implementations hold their network clients (connection pools) between calls; every
    method runs on the worker's event loop and must not block it.
    """

    channel: ClassVar[str]
    provider: ClassVar[str]
    #: Provider batch size for ``send_batch``; 1 means "no batch API".
    max_batch_size: ClassVar[int] = 1
    #: Estimated USD per message when a send reports no cost (set from settings).
    cost_per_message: float | None = None

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Create clients and pools. Called once before the first send."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and pools."""

    @abstractmethod
    async def send(self, delivery: Delivery) -> SendResult:
        """Make one attempt. Raise ``RetryableError`` or ``PermanentError`` on failure."""

    async def send_batch(self, deliveries: Sequence[Delivery], concurrency: int) -> list[Outcome]:
        """One outcome per delivery, in order. Default: concurrent ``send`` calls."""

        async def attempt(delivery: Delivery) -> Outcome:
            try:
                return await self.send(delivery)
            except ConnectorError as error:
                return error
            except Exception as error:  # a connector bug must not lose the batch
                return RetryableError(f"unexpected_error: {type(error).__name__}: {error}")

        return await map_bounded(attempt, deliveries, concurrency)


async def map_bounded(
    fn: Callable[[T], Awaitable[R]], items: Sequence[T], concurrency: int
) -> list[R]:
    """``[await fn(item) for item in items]`` with at most ``concurrency`` running at once.

    A fixed set of worker coroutines pulls items in order: no task or semaphore per item
    (which cost more than an in-memory send on the hot path)."""
    results: list[R] = [None] * len(items)  # type: ignore[list-item]
    indexes = iter(range(len(items)))

    async def worker() -> None:
        for index in indexes:  # shared: each index is taken by exactly one worker
            results[index] = await fn(items[index])

    workers = min(max(1, concurrency), len(items))
    if workers == 1:
        await worker()
    elif workers > 1:
        await asyncio.gather(*(worker() for _ in range(workers)))
    return results
