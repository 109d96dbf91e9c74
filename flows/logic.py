"""Bytewax ``StatefulLogic`` adapters around the pure operators (no decisions made here).

Snapshots are pickled bytes: immutable, taken once per epoch, restored by the builder. Due
times live in the operator state, so ``notify_at`` is recomputed after a resume.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bytewax.operators import StatefulLogic

from operators.campaign import CampaignCursor, CampaignSplitter, SegmentPageFetcher
from operators.parse import Campaign
from operators.strategy import StrategyEngine, StrategyState, ToDigest
from operators.user_pipeline import Release, UserPipeline, UserState

Clock = Callable[[], float]


def _at(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)


def _restore(snapshot: bytes | None) -> Any:
    return None if snapshot is None else pickle.loads(snapshot)


class UserLogic(StatefulLogic):
    """One user's decisions: the ``UserPipeline`` (may it go, when) feeding the
    ``StrategyEngine`` (on which channels, in which order). Items are notification dicts or
    delivery events read back from the events topic (they have an ``event_id``). Emits event
    dicts and ``Release``s. With ``keep_snapshots`` off (recovery off: Bytewax discards them)
    the per-epoch snapshot is ``None`` instead of the pickled state."""

    def __init__(
        self,
        pipeline: UserPipeline,
        strategy: StrategyEngine,
        snapshot: bytes | None,
        clock: Clock = time.time,
        *,
        keep_snapshots: bool = True,
    ):
        self.pipeline = pipeline
        self.keep_snapshots = keep_snapshots
        self.strategy = strategy
        self.clock = clock
        restored = _restore(snapshot)
        if isinstance(restored, UserState):  # a snapshot from before strategies
            restored = (restored, StrategyState())
        self.state, strategy_state = restored or (UserState(), None)
        self.strategy_state = strategy_state or StrategyState()
        self._due: float | None = None  # the last notify_at, as epoch s and as a datetime
        self._due_at: datetime | None = None

    def on_item(self, item: dict) -> tuple[list[dict | Release], bool]:
        now = self.clock()
        if "event_id" in item:
            out = self._from_strategy(self.strategy.on_event(self.strategy_state, item, now), now)
        else:
            out = self._from_pipeline(self.pipeline.on_item(self.state, item, now), now)
        return out, self._empty()

    def on_notify(self) -> tuple[list[dict | Release], bool]:
        now = self.clock()
        out = self._from_pipeline(self.pipeline.on_due(self.state, now), now)
        out += self._from_strategy(self.strategy.on_due(self.strategy_state, now), now)
        return out, self._empty()

    def on_eof(self) -> tuple[list, bool]:
        return [], self._empty()

    def notify_at(self) -> datetime | None:
        """Asked after every activation; the datetime is rebuilt only when the due time moved."""
        due = self.pipeline.next_due(self.state)
        strategy_due = self.strategy.next_due(self.strategy_state)
        if strategy_due is not None and (due is None or strategy_due < due):
            due = strategy_due
        if due != self._due:
            self._due, self._due_at = due, _at(due)
        return self._due_at

    def snapshot(self) -> bytes | None:
        if not self.keep_snapshots:
            return None
        strategy = None if self.strategy_state.is_empty() else self.strategy_state
        return pickle.dumps((self.state, strategy), protocol=pickle.HIGHEST_PROTOCOL)

    def _empty(self) -> bool:
        return self.state.is_empty() and self.strategy_state.is_empty()

    def _from_pipeline(self, outputs: list, now: float) -> list[dict | Release]:
        """The pipeline's releases go on through the strategy."""
        out: list[dict | Release] = []
        for item in outputs:
            if isinstance(item, Release):
                chosen = self.strategy.on_release(
                    self.strategy_state, item.note, item.channels, now
                )
                out += self._from_strategy(chosen, now)
            else:
                out.append(item)
        return out

    def _from_strategy(self, outputs: list, now: float) -> list[dict | Release]:
        """The strategy's low-priority digests go back to the pipeline's digest collector."""
        out: list[dict | Release] = []
        for item in outputs:
            if isinstance(item, ToDigest):
                out += self._from_pipeline(self.pipeline.collect(self.state, item.note, now), now)
            else:
                out.append(item)
        return out


class CampaignLogic(StatefulLogic):
    """Split one campaign a chunk per activation; the cursor is the state."""

    def __init__(
        self,
        splitter: CampaignSplitter,
        fetcher: Callable[[str], SegmentPageFetcher | None],
        snapshot: bytes | None,
        clock: Clock = time.time,
    ) -> None:
        self.splitter = splitter
        self.fetcher = fetcher
        self.clock = clock
        self.cursor: CampaignCursor | None = _restore(snapshot)

    def on_item(self, campaign: Campaign) -> tuple[list[dict], bool]:
        if self.cursor is not None:  # the same campaign again while splitting: ignore
            return [], False
        self.cursor = self.splitter.start(campaign.body, self.clock())
        return self._next()

    def on_notify(self) -> tuple[list[dict], bool]:
        return self._next()

    def on_eof(self) -> tuple[list, bool]:
        return [], self.cursor is None

    def _next(self) -> tuple[list[dict], bool]:
        if self.cursor is None:
            return [], True
        fetch = self.fetcher(self.cursor.campaign["tenant_id"])
        self.cursor, notes = self.splitter.next_chunk(self.cursor, self.clock(), fetch)
        return notes, self.cursor is None

    def notify_at(self) -> datetime | None:
        return None if self.cursor is None else _at(self.clock())  # next chunk right away

    def snapshot(self) -> bytes:
        return pickle.dumps(self.cursor, protocol=pickle.HIGHEST_PROTOCOL)
