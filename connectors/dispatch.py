"""One retry policy for every connector: backoff with jitter, Retry-After, dead-lettering.

``Dispatcher.deliver`` takes a batch of deliveries, sends each channel's share through its
connector (batched and concurrent), retries retryable failures in rounds, and returns the
delivery events plus dead letters for what failed for good. A 429 carrying Retry-After waits
as asked without using up an attempt (bounded by ``max_total_s``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from connectors.base import (
    Connector,
    ConnectorError,
    Delivery,
    Outcome,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.provider_limits import LimiterUnavailable, ProviderLimiter
from notiflow import metrics
from notiflow.messages import DeadLetter
from operators.events import make_event

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and total time."""

    max_attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    max_total_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1``."""
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


@dataclass(slots=True)
class DispatchOutput:
    events: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def _event(delivery: Delivery, status: str, provider: str, now_ms: float, **fields: Any) -> dict:
    return make_event(
        notification_id=delivery.notification_id,
        tenant_id=delivery.tenant_id,
        user_id=delivery.user_id,
        status=status,
        channel=delivery.channel,
        provider=provider,
        category=delivery.category,
        priority=delivery.priority,
        requested_at_ms=delivery.requested_at_ms,
        now_ms=now_ms,
        attempt=delivery.attempt,
        discriminator=delivery.address,
        campaign_id=delivery.metadata.get("campaign_id"),
        variant=delivery.metadata.get("variant"),
        **fields,
    )


class Dispatcher:
    """Route deliveries to connectors by channel and apply the retry policy."""

    def __init__(
        self,
        connectors: Mapping[str, Connector],
        policy: RetryPolicy,
        concurrency: int = 64,
        clock: Callable[[], float] = time.time,
        limiter: ProviderLimiter | None = None,
    ) -> None:
        self.connectors = dict(connectors)
        self.policy = policy
        self.concurrency = concurrency
        self.clock = clock
        self.limiter = limiter
        self._opened = False

    async def open(self) -> None:
        for connector in self.connectors.values():
            await connector.open()
        if self.limiter is not None:
            await self.limiter.open()
        self._opened = True

    async def close(self) -> None:
        for connector in self.connectors.values():
            await connector.close()
        if self.limiter is not None:
            await self.limiter.close()

    async def deliver(self, deliveries: list[Delivery]) -> DispatchOutput:
        """Attempt every delivery until sent, failed for good, or out of attempts/time."""
        if not self._opened:
            await self.open()
        out = DispatchOutput()
        by_channel: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_channel.setdefault(delivery.channel, []).append(delivery)
        await asyncio.gather(
            *(self._deliver_channel(ch, group, out) for ch, group in by_channel.items())
        )
        return out

    async def _deliver_channel(self, channel: str, pending: list[Delivery], out: DispatchOutput):
        connector = self.connectors.get(channel)
        if connector is None:
            now_ms = self.clock() * 1000
            for delivery in pending:
                reason = f"no provider configured for channel {channel!r}"
                out.events.append(_event(delivery, "dead_lettered", "none", now_ms, reason=reason))
                out.dead_letters.append(_letter("undeliverable", reason, delivery))
            return
        started = time.monotonic()
        while pending:
            sending, waiting, token_wait = await self._take_tokens(connector, pending, started)
            if not sending and waiting:
                if time.monotonic() - started + token_wait > self.policy.max_total_s:
                    self._give_up(connector, waiting, "gave up: provider rate limit", out)
                    return
                await asyncio.sleep(token_wait)
                continue
            outcomes = await connector.send_batch(sending, self.concurrency)
            retry: list[tuple[Delivery, RetryableError]] = []
            now_ms = self.clock() * 1000
            for delivery, outcome in zip(sending, outcomes, strict=True):
                if self._settle(connector, delivery, outcome, now_ms, started, out):
                    continue
                retry.append((delivery, outcome))  # type: ignore[arg-type]
            throttled = [e for _d, e in retry if _is_throttle(e) and e.status == 429]
            if throttled and self.limiter is not None:  # pause the provider for every worker
                await self._pause(connector.provider, max(e.retry_after or 0 for e in throttled))
            for delivery, error in retry:
                out.events.append(
                    _event(delivery, "retrying", connector.provider, now_ms, reason=error.reason)
                )
                if not _is_throttle(error):
                    delivery.attempt += 1
            if retry:
                await asyncio.sleep(max(self._delay(d, e) for d, e in retry))
            pending = [d for d, _ in retry] + waiting

    async def _take_tokens(
        self, connector: Connector, pending: list[Delivery], started: float
    ) -> tuple[list[Delivery], list[Delivery], float]:
        """Split ``pending`` into what the provider's account-wide limit lets go now and the
        rest, with how long to wait for the next token."""
        if self.limiter is None:
            return pending, [], 0.0
        try:
            grant = await self.limiter.acquire(connector.provider, len(pending))
        except RetryableError as error:  # limiter unavailable: wait, do not burn attempts
            logger.warning("provider limiter unavailable", extra={"error": error.reason})
            return [], pending, error.retry_after or 1.0
        return pending[: grant.granted], pending[grant.granted :], grant.wait_s

    async def _pause(self, provider: str, seconds: float) -> None:
        try:
            await self.limiter.pause(provider, seconds)
        except RetryableError as error:
            logger.warning("could not pause provider", extra={"error": error.reason})

    def _give_up(
        self, connector: Connector, deliveries: list[Delivery], why: str, out: DispatchOutput
    ) -> None:
        now_ms = self.clock() * 1000
        for delivery in deliveries:
            out.events.append(_event(delivery, "failed", connector.provider, now_ms, reason=why))
            out.dead_letters.append(
                _letter("delivery_failed", why, delivery, provider=connector.provider)
            )

    def _settle(
        self,
        connector: Connector,
        delivery: Delivery,
        outcome: Outcome,
        now_ms: float,
        started: float,
        out: DispatchOutput,
    ) -> bool:
        """Record a final outcome and return True, or return False to retry."""
        provider = connector.provider
        if isinstance(outcome, SendResult):
            metrics.PROVIDER_ATTEMPTS.labels(provider=provider, result="sent").inc()
            latency = max(0.0, now_ms - delivery.requested_at_ms)
            out.events.append(
                _event(
                    delivery,
                    "sent",
                    provider,
                    now_ms,
                    latency_ms=latency,
                    cost_usd=outcome.cost_usd,
                    provider_message_id=outcome.provider_message_id,
                )
            )
            return True
        error: ConnectorError = outcome
        kind = "retryable" if isinstance(error, RetryableError) else "permanent"
        metrics.PROVIDER_ATTEMPTS.labels(provider=provider, result=kind).inc()
        out_of_time = time.monotonic() - started >= self.policy.max_total_s
        if (
            isinstance(error, RetryableError)
            and not out_of_time
            and (_is_throttle(error) or delivery.attempt < self.policy.max_attempts)
        ):
            return False
        why = error.reason if isinstance(error, PermanentError) else f"gave up: {error.reason}"
        logger.warning(
            "delivery failed",
            extra={
                "notification_id": delivery.notification_id,
                "channel": delivery.channel,
                "provider": provider,
                "reason": why,
                "attempt": delivery.attempt,
            },
        )
        out.events.append(_event(delivery, "failed", provider, now_ms, reason=why))
        out.dead_letters.append(_letter("delivery_failed", why, delivery, provider=provider))
        return True

    def _delay(self, delivery: Delivery, error: RetryableError) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, self.policy.max_total_s)
        return self.policy.backoff(delivery.attempt)


def _is_throttle(error: RetryableError) -> bool:
    """Waiting that does not use up an attempt: a 429 with Retry-After, or our own limiter."""
    return (error.status == 429 and error.retry_after is not None) or isinstance(
        error, LimiterUnavailable
    )


def _letter(kind: str, reason: str, delivery: Delivery, **context: Any) -> DeadLetter:
    key = f"{delivery.tenant_id}/{delivery.user_id}"
    return DeadLetter(kind, reason, key, {"delivery": asdict(delivery), **context})
