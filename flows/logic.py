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
from operators.user_pipeline import Release, UserPipeline, UserState

Clock = Callable[[], float]


def _at(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)


def _restore(snapshot: bytes | None) -> Any:
    return None if snapshot is None else pickle.loads(snapshot)


class UserLogic(StatefulLogic):
    """One user's ``UserPipeline`` state. Emits event dicts and ``Release``s."""

    def __init__(self, pipeline: UserPipeline, snapshot: bytes | None, clock: Clock = time.time):
        self.pipeline = pipeline
        self.clock = clock
        self.state: UserState = _restore(snapshot) or UserState()

    def on_item(self, note: dict) -> tuple[list[dict | Release], bool]:
        out = self.pipeline.on_item(self.state, note, self.clock())
        return out, self.state.is_empty()

    def on_notify(self) -> tuple[list[dict | Release], bool]:
        out = self.pipeline.on_due(self.state, self.clock())
        return out, self.state.is_empty()

    def on_eof(self) -> tuple[list, bool]:
        return [], self.state.is_empty()

    def notify_at(self) -> datetime | None:
        return _at(self.pipeline.next_due(self.state))

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


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
