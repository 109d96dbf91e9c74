"""The retry policy: exponential backoff with full jitter, bounded by attempts and time."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` per provider; ``max_total_s`` bounds every wait for one batch."""

    max_attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    max_total_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` (full jitter)."""
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))
