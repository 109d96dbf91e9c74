"""Circuit breakers: stop sending to a provider that is failing, probe it, close when healthy.

One breaker per provider, shared by every worker thread of a process (``breaker_for``). It
counts outcomes in a rolling window; only provider-side failures (retryable errors: timeouts,
5xx, resets) count against it — a bad address is the recipient's fault, not the provider's.

closed ──(≥ min_calls in window and failure ratio ≥ threshold)──► open
open ──(cooldown elapsed)──► half_open: up to ``probes`` calls are let through
half_open ──(a probe succeeds)──► closed;  ──(a probe fails)──► open again

``transitions`` are returned to the caller so the dispatcher can emit them as events and
metrics. Time comes from an injectable clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    window_s: float = 30.0
    min_calls: int = 20
    failure_ratio: float = 0.5
    cooldown_s: float = 15.0
    probes: int = 3


class Transition(NamedTuple):
    provider: str
    old: str
    new: str
    reason: str


class CircuitBreaker:
    """Thread-safe breaker for one provider."""

    def __init__(
        self, provider: str, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.clock = clock
        self.state = CLOSED
        self._calls: deque[tuple[float, bool]] = deque()  # (time, failed)
        self._failures = 0  # failures in ``_calls``, kept as calls come and go (O(1) record)
        self._opened_at = 0.0
        self._probes_left = 0
        self._lock = threading.Lock()
        self.transitions: list[Transition] = []  # drained by ``take_transitions``

    def allow(self) -> bool:
        """May a call go to the provider now? (Half-open lets a few probes through.)"""
        with self._lock:
            if self.state == OPEN and self.clock() - self._opened_at >= self.policy.cooldown_s:
                self._move(HALF_OPEN, "cooldown elapsed; probing")
                self._probes_left = self.policy.probes
            if self.state == CLOSED:
                return True
            if self.state == HALF_OPEN and self._probes_left > 0:
                self._probes_left -= 1
                return True
            return False

    def retry_in(self) -> float:
        """Seconds until an open breaker will probe again (0 when not open)."""
        with self._lock:
            if self.state != OPEN:
                return 0.0
            return max(0.0, self.policy.cooldown_s - (self.clock() - self._opened_at))

    def record(self, failed: bool) -> None:
        """Count one call's outcome (``failed``: a provider-side failure)."""
        self.record_all((failed,))

    def record_all(self, failures: Iterable[bool]) -> None:
        """Count a round of calls' outcomes, in order, under one lock and clock reading."""
        with self._lock:
            now = self.clock()
            for failed in failures:
                self._record(now, failed)

    def _record(self, now: float, failed: bool) -> None:
        """Count one outcome at ``now`` (the lock is held)."""
        if self.state == HALF_OPEN:
            if failed:
                self._open(now, "probe failed")
            else:
                self._calls.clear()
                self._failures = 0
                self._move(CLOSED, "probe succeeded")
            return
        if self.state == OPEN:
            return
        self._calls.append((now, failed))
        self._failures += failed
        while self._calls and self._calls[0][0] <= now - self.policy.window_s:
            self._failures -= self._calls.popleft()[1]
        total, failures = len(self._calls), self._failures
        if total >= self.policy.min_calls and failures / total >= self.policy.failure_ratio:
            self._open(now, f"{failures}/{total} calls failed in {self.policy.window_s:g}s")

    def take_transitions(self) -> list[Transition]:
        with self._lock:
            taken, self.transitions = self.transitions, []
            return taken

    def _open(self, now: float, reason: str) -> None:
        self._opened_at = now
        self._calls.clear()
        self._failures = 0
        self._move(OPEN, reason)

    def _move(self, new: str, reason: str) -> None:
        self.transitions.append(Transition(self.provider, self.state, new, reason))
        self.state = new


_breakers: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def breaker_for(provider: str, policy: BreakerPolicy | None = None) -> CircuitBreaker:
    """The process-wide breaker for ``provider`` (created on first use)."""
    with _registry_lock:
        breaker = _breakers.get(provider)
        if breaker is None:
            breaker = _breakers[provider] = CircuitBreaker(provider, policy or BreakerPolicy())
        return breaker
