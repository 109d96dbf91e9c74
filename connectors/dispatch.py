"""One delivery policy for every connector: retries, provider limits, breakers, failover,
the send ledger and dead-lettering.

``Dispatcher.deliver`` takes a batch of deliveries and, per tenant and channel, walks the
provider chain (``connectors.routing``):

- the ledger (Redis) skips deliveries already sent before a crash and re-emits their event;
- an open circuit breaker, exhausted retries or a provider auth/config error moves the rest
  to the next provider (``failed_over``); the last provider's failure is ``failed`` plus a
  dead letter with the full delivery;
- retryable errors are retried with backoff and jitter up to ``max_attempts``; a 429 with
  Retry-After, a wait for tokens of the account-wide ``ProviderLimiter`` and a limiter outage
  wait without using up an attempt (and a 429 pauses the provider for every worker); all of it
  bounded by ``max_total_s``;
- a dead push token is ``token_invalidated`` and removed from the user's tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from connectors.base import (
    Connector,
    ConnectorError,
    Delivery,
    Outcome,
    RetryableError,
    SendResult,
    TokenInvalid,
    map_bounded,
)
from connectors.circuit import HALF_OPEN, BreakerPolicy, breaker_for
from connectors.ledger import SENDING, SENT, UNKNOWN, SendLedger
from connectors.provider_limits import LimiterUnavailable, ProviderLimiter
from connectors.retry import RetryPolicy
from connectors.routing import ProviderRoutes
from connectors.tokens import TokenStore
from notiflow import metrics
from notiflow.messages import DeadLetter
from operators.events import make_event, stable_id

logger = logging.getLogger(__name__)

__all__ = ["DispatchOutput", "Dispatcher", "RetryPolicy"]

#: Provider errors that say "this provider is misconfigured", worth trying the next one.
FAILOVER_STATUSES = frozenset({401, 403, 530, 535})  # HTTP auth; SMTP auth required/failed
CIRCUIT_EVENTS = {
    "open": "circuit_opened",
    "half_open": "circuit_half_open",
    "closed": "circuit_closed",
}
CIRCUIT_GAUGE = {"closed": 0, "half_open": 1, "open": 2}


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
        strategy=delivery.metadata.get("strategy"),
        **fields,
    )


class Dispatcher:
    """Deliver batches through provider chains. One per worker event loop."""

    def __init__(
        self,
        routes: ProviderRoutes | Mapping[str, Connector],
        policy: RetryPolicy,
        concurrency: int = 64,
        clock: Callable[[], float] = time.time,
        limiter: ProviderLimiter | None = None,
        ledger: SendLedger | None = None,
        tokens: TokenStore | None = None,
        breaker_policy: BreakerPolicy | None = None,
    ) -> None:
        if not isinstance(routes, ProviderRoutes):
            routes = ProviderRoutes(list(routes.values()))
        self.routes = routes
        self.policy = policy
        self.concurrency = concurrency
        self.clock = clock
        self.limiter = limiter
        self.ledger = ledger
        self.tokens = tokens
        self.breaker_policy = breaker_policy or BreakerPolicy()
        self._opened = False

    async def open(self) -> None:
        for connector in self.routes.all():
            await connector.open()
        for service in (self.limiter, self.ledger):
            if service is not None:
                await service.open()
        self._opened = True

    async def close(self) -> None:
        for connector in self.routes.all():
            await connector.close()
        for service in (self.limiter, self.ledger, self.tokens):
            if service is not None:
                await service.close()

    async def deliver(self, deliveries: list[Delivery]) -> DispatchOutput:
        """Every delivery ends ``sent``, ``failed`` (+ dead letter), ``dead_lettered`` or
        ``token_invalidated``; ``retrying``/``failed_over`` events mark the way there."""
        if not self._opened:
            await self.open()
        out = DispatchOutput()
        pending = await self._skip_already_sent(deliveries, out)
        chains: dict[tuple[str, str], list[Delivery]] = {}
        for delivery in pending:
            chains.setdefault((delivery.tenant_id, delivery.channel), []).append(delivery)
        await asyncio.gather(
            *(
                self._deliver_chain(self.routes.chain(tenant, channel), group, out)
                for (tenant, channel), group in chains.items()
            )
        )
        self._breaker_events(out)
        return out

    async def _skip_already_sent(self, deliveries: list[Delivery], out: DispatchOutput):
        if self.ledger is None or not deliveries:
            return deliveries
        entries = await self.ledger.claim(deliveries)
        pending = []
        skipped: list[tuple[Delivery, bool]] = []
        for delivery, entry in zip(deliveries, entries, strict=True):
            if entry.state == UNKNOWN or (
                entry.state == SENDING and self.ledger.in_flight == "skip"
            ):
                skipped.append((delivery, entry.state == SENDING))
                continue
            if entry.state != SENT:
                pending.append(delivery)
                continue
            metrics.LEDGER_SKIPPED.inc()
            fields = dict(entry.sent or {})
            delivery.attempt = fields.pop("attempt", 1)
            provider = fields.pop("provider", "unknown")
            out.events.append(_event(delivery, "sent", provider, self.clock() * 1000, **fields))
        why = "outcome unknown: the process died mid-send; not resent (ledger in_flight=skip)"
        now_ms = self.clock() * 1000
        for delivery, first_time in skipped:  # the same failed event on every replay
            out.events.append(_event(delivery, "failed", "unknown", now_ms, reason=why))
            if first_time:
                out.dead_letters.append(_letter("outcome_unknown", why, delivery))
        await self.ledger.mark_unknown([d for d, first_time in skipped if first_time])
        return pending

    async def _deliver_chain(
        self, chain: list[Connector], pending: list[Delivery], out: DispatchOutput
    ) -> None:
        if not chain:
            now_ms = self.clock() * 1000
            for delivery in pending:
                reason = f"no provider configured for channel {delivery.channel!r}"
                out.events.append(_event(delivery, "dead_lettered", "none", now_ms, reason=reason))
                out.dead_letters.append(_letter("undeliverable", reason, delivery))
            await self._release(pending)
            return
        for index, connector in enumerate(chain):
            last = index == len(chain) - 1
            leftovers = await self._deliver_provider(connector, pending, out, last)
            if not leftovers:
                return
            successor = chain[index + 1].provider
            now_ms = self.clock() * 1000
            for delivery, reason in leftovers:
                out.events.append(
                    _event(
                        delivery,
                        "failed_over",
                        connector.provider,
                        now_ms,
                        reason=f"{reason}; trying {successor}",
                    )
                )
                delivery.attempt = 1
            metrics.FAILOVERS.labels(from_provider=connector.provider, to_provider=successor).inc(
                len(leftovers)
            )
            pending = [d for d, _ in leftovers]

    async def _deliver_provider(
        self, connector: Connector, pending: list[Delivery], out: DispatchOutput, last: bool
    ) -> list[tuple[Delivery, str]]:
        """Send through one provider; return what should fail over to the next one."""
        breaker = breaker_for(connector.provider, self.breaker_policy)
        started = time.monotonic()
        leftovers: list[tuple[Delivery, str]] = []
        while pending:
            if not breaker.allow():
                if not last:
                    return leftovers + [(d, "circuit open") for d in pending]
                wait = max(breaker.retry_in(), 0.05)
                if time.monotonic() - started + wait > self.policy.max_total_s:
                    await self._fail(connector, pending, "gave up: circuit open", out)
                    return leftovers
                await asyncio.sleep(wait)
                continue
            if breaker.state == HALF_OPEN:  # probe with a few, keep the rest for after
                pending, held = (
                    pending[: self.breaker_policy.probes],
                    pending[self.breaker_policy.probes :],
                )
            else:
                held = []
            sending, waiting, token_wait = await self._take_tokens(connector, pending)
            if not sending:
                if time.monotonic() - started + token_wait > self.policy.max_total_s:
                    await self._fail(connector, waiting + held, "gave up: provider rate limit", out)
                    return leftovers
                await asyncio.sleep(token_wait)
                pending = waiting + held
                continue
            outcomes = await self._send(connector, sending)
            retry, moved = await self._settle_round(
                connector, breaker, sending, outcomes, started, last, out
            )
            leftovers += moved
            if retry:
                await asyncio.sleep(max(self._delay(d, e) for d, e in retry))
            pending = [d for d, _ in retry] + waiting + held
        return leftovers

    async def _send(self, connector: Connector, sending: list[Delivery]) -> list[Outcome]:
        """One attempt for each delivery. With a ledger and a one-at-a-time provider, each
        send is confirmed in the ledger the moment the provider accepts it, so a crash can
        only leave the sends of that instant unconfirmed (not a whole round)."""
        if self.ledger is None or connector.max_batch_size > 1:
            return await connector.send_batch(sending, self.concurrency)
        ledger = self.ledger

        async def one(delivery: Delivery) -> Outcome:
            await ledger.mark_sending(delivery)
            try:
                result = await connector.send(delivery)
            except ConnectorError as error:
                return error
            except Exception as error:  # a connector bug must not lose the batch
                return RetryableError(f"unexpected_error: {type(error).__name__}: {error}")
            fields = self._sent_fields(connector, delivery, result, self.clock() * 1000)
            result.detail["_ledger_fields"] = fields
            await ledger.confirm([(delivery, fields)])
            return result

        return await map_bounded(one, sending, self.concurrency)

    @staticmethod
    def _sent_fields(
        connector: Connector, delivery: Delivery, result: SendResult, now_ms: float
    ) -> dict[str, Any]:
        """What a ``sent`` event carries (also stored in the ledger to re-emit it)."""
        return {
            "provider": result.detail.get("provider", connector.provider),
            "attempt": delivery.attempt,
            "latency_ms": max(0.0, now_ms - delivery.requested_at_ms),
            "cost_usd": result.cost_usd
            if result.cost_usd is not None
            else connector.cost_per_message,
            "provider_message_id": result.provider_message_id,
            "segments": result.detail.get("segments"),
        }

    async def _settle_round(self, connector, breaker, sending, outcomes, started, last, out):
        """Record one round's outcomes; return (to retry, to fail over)."""
        provider = connector.provider
        now_ms = self.clock() * 1000
        retry: list[tuple[Delivery, RetryableError]] = []
        moved: list[tuple[Delivery, str]] = []
        confirmed: list[tuple[Delivery, dict]] = []
        failed: list[tuple[Delivery, str]] = []
        out_of_time = time.monotonic() - started >= self.policy.max_total_s
        breaker.record_all(
            isinstance(o, RetryableError) and not isinstance(o, LimiterUnavailable)
            for o in outcomes
        )
        attempts: Counter[tuple[str, str]] = Counter()  # one metric increment per round
        for delivery, outcome in zip(sending, outcomes, strict=True):
            if isinstance(outcome, SendResult):
                attempts[provider, "sent"] += 1
                fields = outcome.detail.pop("_ledger_fields", None)
                if fields is None:  # not confirmed yet (batch provider or no ledger)
                    fields = self._sent_fields(connector, delivery, outcome, now_ms)
                    confirmed.append((delivery, fields))
                shown = {k: v for k, v in fields.items() if k not in ("provider", "attempt")}
                out.events.append(_event(delivery, "sent", fields["provider"], now_ms, **shown))
                continue
            kind = "retryable" if isinstance(outcome, RetryableError) else "permanent"
            real = getattr(outcome, "provider", None) or provider  # e.g. "fcm" behind "push"
            attempts[real, kind] += 1
            if isinstance(outcome, TokenInvalid):
                await self._invalidate(delivery, real, outcome.reason, now_ms, out)
            elif isinstance(outcome, RetryableError):
                if not out_of_time and (
                    _is_throttle(outcome) or delivery.attempt < self.policy.max_attempts
                ):
                    retry.append((delivery, outcome))
                elif not last:
                    moved.append((delivery, f"gave up: {outcome.reason}"))
                else:
                    failed.append((delivery, f"gave up: {outcome.reason}"))
            elif outcome.status in FAILOVER_STATUSES and not last:
                moved.append((delivery, outcome.reason))
            else:
                failed.append((delivery, outcome.reason))
        for labels, count in attempts.items():
            metrics.child(metrics.PROVIDER_ATTEMPTS, *labels).inc(count)
        if self.ledger is not None and confirmed:
            await self.ledger.confirm(confirmed)
        for delivery, why in failed:
            self._failed(delivery, provider, why, now_ms, out)
        await self._release([d for d, _ in failed])
        throttled = [e for _d, e in retry if e.status == 429 and e.retry_after]
        if throttled and self.limiter is not None:
            await self._pause(provider, max(e.retry_after or 0 for e in throttled))
        for delivery, error in retry:
            out.events.append(_event(delivery, "retrying", provider, now_ms, reason=error.reason))
            if not _is_throttle(error):
                delivery.attempt += 1
        return retry, moved

    def _failed(
        self, delivery: Delivery, provider: str, why: str, now_ms: float, out: DispatchOutput
    ) -> None:
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

    async def _fail(
        self, connector: Connector, deliveries: list[Delivery], why: str, out: DispatchOutput
    ) -> None:
        now_ms = self.clock() * 1000
        for delivery in deliveries:
            self._failed(delivery, connector.provider, why, now_ms, out)
        await self._release(deliveries)

    async def _invalidate(
        self, delivery: Delivery, provider: str, reason: str, now_ms: float, out: DispatchOutput
    ) -> None:
        metrics.TOKENS_INVALIDATED.labels(provider=provider).inc()
        out.events.append(_event(delivery, "token_invalidated", provider, now_ms, reason=reason))
        if self.tokens is not None:
            await self.tokens.remove(delivery.tenant_id, delivery.user_id, delivery.address)

    async def _release(self, deliveries: list[Delivery]) -> None:
        if self.ledger is not None and deliveries:
            await self.ledger.release(deliveries)

    async def _take_tokens(self, connector: Connector, pending: list[Delivery]):
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

    def _delay(self, delivery: Delivery, error: RetryableError) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, self.policy.max_total_s)
        return self.policy.backoff(delivery.attempt)

    def _breaker_events(self, out: DispatchOutput) -> None:
        now_ms = self.clock() * 1000
        for connector in self.routes.all():
            breaker = breaker_for(connector.provider, self.breaker_policy)
            for change in breaker.take_transitions():
                metrics.CIRCUIT_STATE.labels(provider=change.provider).set(
                    CIRCUIT_GAUGE[change.new]
                )
                metrics.CIRCUIT_TRANSITIONS.labels(provider=change.provider, state=change.new).inc()
                logger.warning(
                    "circuit breaker",
                    extra={
                        "provider": change.provider,
                        "state": change.new,
                        "reason": change.reason,
                    },
                )
                out.events.append(
                    make_event(
                        notification_id=stable_id("circuit", change.provider, now_ms),
                        tenant_id="system",
                        user_id="-",
                        status=CIRCUIT_EVENTS[change.new],
                        provider=change.provider,
                        reason=change.reason,
                        requested_at_ms=now_ms,
                        now_ms=now_ms,
                        channel=connector.channel,
                    )
                )


def _is_throttle(error: RetryableError) -> bool:
    """Waiting that does not use up an attempt: a 429 with Retry-After, or our own limiter."""
    return (error.status == 429 and error.retry_after is not None) or isinstance(
        error, LimiterUnavailable
    )


def _letter(kind: str, reason: str, delivery: Delivery, **context: Any) -> DeadLetter:
    key = f"{delivery.tenant_id}/{delivery.user_id}"
    return DeadLetter(kind, reason, key, {"delivery": asdict(delivery), **context})
