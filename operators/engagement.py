"""Per-user, per-channel engagement: what the ``smart`` strategy learns from delivery receipts.

Per channel, a Beta posterior over the open rate: ``successes`` (opened/clicked) out of
``trials`` (sent), with a uniform Beta(1, 1) prior. Counts are small ints: once a channel
reaches ``TRIAL_CAP`` trials both of its counts are halved, so old behaviour fades (a step
decay) and the model stays bounded. Opens are also counted per local hour of day (24 buckets,
all halved when one reaches ``HOUR_CAP``), for send-time optimisation.

``Engagement`` is immutable (every update returns a new one), compact and picklable: about
200 bytes pickled whatever the history. Callers decide what counts as a trial or a success
(and deduplicate replayed events); nothing here reads the clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Channels in the order their counts are stored (``schemas.request.Channel`` values).
CHANNELS = ("email", "sms", "push", "in_app", "webhook", "voice")
_INDEX = {channel: i for i, channel in enumerate(CHANNELS)}
TRIAL_CAP = 64  # a channel's counts are halved when its trials reach this
HOUR_CAP = 32  # every hour bucket is halved when one reaches this
PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0
_NO_CHANNELS = (0,) * len(CHANNELS)
_NO_HOURS = (0,) * 24


def _bump(counts: tuple[int, ...], index: int) -> tuple[int, ...]:
    return (*counts[:index], counts[index] + 1, *counts[index + 1 :])


@dataclass(frozen=True, slots=True)
class Engagement:
    """Trials and successes per channel (``CHANNELS`` order) and opens per local hour."""

    trials: tuple[int, ...] = _NO_CHANNELS
    successes: tuple[int, ...] = _NO_CHANNELS
    hours: tuple[int, ...] = _NO_HOURS

    # --- updates -----------------------------------------------------------------------------
    def sent(self, channel: str) -> Engagement:
        """One more trial on ``channel`` (unknown channels are ignored)."""
        index = _INDEX.get(channel)
        if index is None:
            return self
        return self._capped(index, _bump(self.trials, index), self.successes)

    def opened(self, channel: str, local_hour: int | None) -> Engagement:
        """One more success on ``channel`` and one more open at ``local_hour`` (0–23).

        A success never outnumbers trials: an open with no unmatched trial (its ``sent``
        event lost or not yet seen) also counts as a trial.
        """
        index = _INDEX.get(channel)
        hours = self.hours
        if local_hour is not None and 0 <= local_hour < 24:
            hours = _bump(hours, local_hour)
            if hours[local_hour] >= HOUR_CAP:
                hours = tuple(count // 2 for count in hours)
        if index is None:
            return Engagement(self.trials, self.successes, hours)
        trials = self.trials
        if self.successes[index] >= trials[index]:
            trials = _bump(trials, index)
        model = Engagement(trials, self.successes, hours)
        return model._capped(index, trials, _bump(self.successes, index))

    def _capped(
        self, index: int, trials: tuple[int, ...], successes: tuple[int, ...]
    ) -> Engagement:
        if trials[index] >= TRIAL_CAP:
            halved_trials = trials[index] // 2
            halved_successes = min((successes[index] + 1) // 2, halved_trials)
            trials = (*trials[:index], halved_trials, *trials[index + 1 :])
            successes = (*successes[:index], halved_successes, *successes[index + 1 :])
        return Engagement(trials, successes, self.hours)

    # --- reads -------------------------------------------------------------------------------
    def observations(self, channel: str) -> int:
        """Trials recorded on ``channel`` (after decay)."""
        index = _INDEX.get(channel)
        return 0 if index is None else self.trials[index]

    def rate(self, channel: str) -> float:
        """Posterior mean open rate on ``channel``."""
        index = _INDEX.get(channel)
        successes = 0 if index is None else self.successes[index]
        trials = 0 if index is None else self.trials[index]
        return (PRIOR_ALPHA + successes) / (PRIOR_ALPHA + PRIOR_BETA + trials)

    def observed_rate(self, channel: str) -> float:
        """Successes / trials on ``channel`` (0.0 without trials)."""
        index = _INDEX.get(channel)
        if index is None or not self.trials[index]:
            return 0.0
        return self.successes[index] / self.trials[index]

    @property
    def opens(self) -> int:
        """Opens in the hour histogram (after decay)."""
        return sum(self.hours)

    def sample_best_channel(self, rng: random.Random, channels: Sequence[str]) -> str:
        """Thompson sampling: draw an open rate per channel from its posterior, take the best.

        Ties go to the earlier channel. Deterministic for a given ``rng`` state. Raises
        ``ValueError`` for an empty ``channels``.
        """
        if not channels:
            raise ValueError("no channels to choose from")
        best, best_draw = channels[0], -1.0
        for channel in channels:
            index = _INDEX.get(channel)
            successes = 0 if index is None else self.successes[index]
            failures = 0 if index is None else self.trials[index] - successes
            draw = rng.betavariate(PRIOR_ALPHA + successes, PRIOR_BETA + failures)
            if draw > best_draw:
                best, best_draw = channel, draw
        return best

    def best_hour(
        self, candidates: Iterable[int] | None = None, *, min_observations: int = 1
    ) -> int | None:
        """The local hour with the most opens among ``candidates`` (default 0–23, in order;
        ties go to the earlier candidate), or ``None`` with fewer than ``min_observations``
        opens in the histogram or no candidate."""
        if self.opens < max(min_observations, 1):
            return None
        best: int | None = None
        for hour in range(24) if candidates is None else candidates:
            if best is None or self.hours[hour % 24] > self.hours[best % 24]:
                best = hour % 24
        return best
