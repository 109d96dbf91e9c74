"""The Bytewax adapter around the per-user operators: snapshots only where they are kept."""

from __future__ import annotations

from flows.logic import UserLogic
from operators.strategy import StrategyConfig, StrategyEngine
from operators.user_pipeline import Release
from tests.operators.test_user_pipeline import T0, note, pipeline


def user_logic(snapshot: bytes | None, now: float, *, keep: bool = True) -> UserLogic:
    return UserLogic(
        pipeline(),
        StrategyEngine(StrategyConfig()),
        snapshot,
        clock=lambda: now,
        keep_snapshots=keep,
    )


def test_a_scheduled_notification_survives_a_snapshot_and_fires_once() -> None:
    logic = user_logic(None, T0)
    out, discard = logic.on_item(note(send_at_ms=(T0 + 600) * 1000))
    assert [o["status"] for o in out] == ["accepted", "scheduled"] and not discard
    snapshot = logic.snapshot()
    assert isinstance(snapshot, bytes)

    resumed = user_logic(snapshot, T0 + 600)
    assert resumed.notify_at() is not None and resumed.notify_at().timestamp() == T0 + 600
    fired, _ = resumed.on_notify()
    assert [(type(o), o.note["id"]) for o in fired] == [(Release, "n1")]
    assert resumed.on_notify()[0] == []  # once


def test_without_recovery_the_snapshot_is_not_built() -> None:
    logic = user_logic(None, T0, keep=False)
    logic.on_item(note(send_at_ms=(T0 + 600) * 1000))
    assert logic.snapshot() is None
    assert logic.notify_at().timestamp() == T0 + 600  # the state itself is unchanged
