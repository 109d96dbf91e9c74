"""The per-user state machine: every decision, with time passed in."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.rate_limit import PolicyBook
from operators.user_pipeline import PipelineConfig, Release, UserPipeline, UserState

SMS_CAP = {
    "default": {"action": "defer", "caps": [{"channel": "sms", "limit": 3, "window_s": 3600}]}
}
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()  # 14:00 in Berlin (CEST)


def pipeline(limits=SMS_CAP, **config) -> UserPipeline:
    return UserPipeline(PipelineConfig(**config), PolicyBook.from_dict(limits))


def note(i: int = 1, **overrides) -> dict:
    base = {
        "id": f"n{i}",
        "id_generated": False,
        "tenant_id": "acme",
        "user_id": "u1",
        "key": "acme/u1",
        "category": "orders",
        "priority": "normal",
        "channels": ["email"],
        "content": {"email": {"subject": "s", "body": f"body {i}"}},
        "template": None,
        "data": {},
        "recipient": {
            "user_id": "u1",
            "email": "u1@example.test",
            "phone": "+4915112345678",
            "timezone": "Europe/Berlin",
        },
        "dedup_key": None,
        "send_at_ms": None,
        "expires_at_ms": None,
        "digest": None,
        "metadata": {},
        "requested_at_ms": T0 * 1000,
        "source": f"req/0/{i}",
    }
    return {**base, **overrides}


def statuses(out) -> list[str]:
    return [o["status"] if isinstance(o, dict) else "release" for o in out]


def held_until(state: UserState) -> float:
    return min(h.due for h in state.held)


def releases(out) -> list[Release]:
    return [o for o in out if isinstance(o, Release)]


def test_accept_then_release_now():
    out = pipeline().on_item(UserState(), note(), T0)
    assert statuses(out) == ["accepted", "release"]
    assert releases(out)[0].channels == ("email",)


def test_repeated_id_and_repeated_content_are_deduplicated():
    p, state = pipeline(), UserState()
    p.on_item(state, note(1, dedup_key="order-9"), T0)
    again = p.on_item(state, note(1), T0 + 1)
    same_key = p.on_item(state, note(2, dedup_key="order-9"), T0 + 2)
    p.on_item(state, note(6), T0 + 3)
    same_body = p.on_item(
        state, note(3, content={"email": {"subject": "s", "body": "body 6"}}), T0 + 3
    )
    assert statuses(again) == ["deduplicated"] and "already accepted" in again[0]["reason"]
    assert statuses(same_key) == ["deduplicated"] and "n1" in same_key[0]["reason"]
    assert statuses(same_body) == ["deduplicated"]
    critical = p.on_item(state, note(4, dedup_key="order-9", priority="critical"), T0 + 4)
    assert statuses(critical) == ["accepted", "release"]  # critical opts out of content dedup
    later = p.on_item(state, note(5, dedup_key="order-9"), T0 + 601)
    assert statuses(later) == ["accepted", "release"]


def test_stale_notification_is_expired():
    out = pipeline().on_item(UserState(), note(expires_at_ms=(T0 - 1) * 1000), T0)
    assert statuses(out) == ["accepted", "expired"]


def test_notification_that_goes_stale_while_held_is_expired():
    p, state = pipeline(), UserState()
    out = p.on_item(state, note(send_at_ms=(T0 + 60) * 1000, expires_at_ms=(T0 + 30) * 1000), T0)
    assert statuses(out) == ["accepted", "scheduled"]
    assert statuses(p.on_due(state, T0 + 60)) == ["expired"]


def test_scheduled_notification_is_held_and_fires_once_after_a_restart():
    p, state = pipeline(), UserState()
    out = p.on_item(state, note(send_at_ms=(T0 + 600) * 1000), T0)
    assert statuses(out) == ["accepted", "scheduled"]
    assert p.next_due(state) == T0 + 600
    restored = pickle.loads(pickle.dumps(state))  # what a recovery snapshot holds
    assert p.on_due(restored, T0 + 599) == []
    fired = p.on_due(restored, T0 + 600)
    assert statuses(fired) == ["release"]
    assert p.on_due(restored, T0 + 601) == []


def test_quiet_hours_backlog_becomes_one_digest():
    p, state = pipeline(), UserState()
    night = datetime(2026, 6, 1, 21, 30, tzinfo=UTC).timestamp()  # 23:30 Berlin
    quiet = {
        "user_id": "u1",
        "email": "u1@example.test",
        "timezone": "Europe/Berlin",
        "quiet_hours": "22:00-07:00",
    }
    for i in range(3):
        out = p.on_item(state, note(i, recipient=quiet), night + i)
        assert statuses(out) == ["accepted", "held_quiet_hours"]
    morning = datetime(2026, 6, 2, 5, 0, tzinfo=UTC).timestamp()  # 07:00 Berlin
    assert held_until(state) == morning
    out = p.on_due(state, morning)
    assert statuses(out).count("digested") == 3
    [digest] = releases(out)
    assert digest.note["category"] == "digest" and digest.channels == ("email",)
    assert sorted(digest.note["metadata"]["digest_of"].split(",")) == ["n0", "n1", "n2"]


def test_critical_ignores_quiet_hours_and_sms_hours():
    night = datetime(2026, 6, 1, 21, 30, tzinfo=UTC).timestamp()
    quiet = {**note()["recipient"], "quiet_hours": "22:00-07:00"}
    out = pipeline().on_item(
        UserState(), note(recipient=quiet, priority="critical", channels=["email", "sms"]), night
    )
    assert releases(out)[0].channels == ("email", "sms")


def test_sms_waits_for_local_daytime_while_email_goes():
    p, state = pipeline(), UserState()
    late = datetime(2026, 6, 1, 20, 0, tzinfo=UTC).timestamp()  # 22:00 Berlin
    out = p.on_item(state, note(channels=["email", "sms"]), late)
    assert statuses(out) == ["accepted", "held_quiet_hours", "release"]
    assert releases(out)[0].channels == ("email",)
    assert out[1]["channel"] == "sms"
    eight = datetime(2026, 6, 2, 6, 0, tzinfo=UTC).timestamp()  # 08:00 Berlin
    assert held_until(state) == eight
    assert releases(p.on_due(state, eight))[0].channels == ("sms",)


def test_sms_cap_defers_the_fourth_and_releases_it_later():
    p, state = pipeline(), UserState()
    for i in range(3):
        assert releases(p.on_item(state, note(i, channels=["sms"]), T0 + i))
    out = p.on_item(state, note(9, channels=["sms"]), T0 + 10)
    assert statuses(out) == ["accepted", "deferred"]
    assert held_until(state) == T0 + 3600
    assert releases(p.on_due(state, T0 + 3600))[0].channels == ("sms",)


def test_drop_action_emits_rate_limited():
    limits = {
        "default": {"action": "drop", "caps": [{"channel": "email", "limit": 1, "window_s": 60}]}
    }
    p, state = pipeline(limits), UserState()
    p.on_item(state, note(1), T0)
    out = p.on_item(state, note(2), T0 + 1)
    assert statuses(out) == ["accepted", "rate_limited"] and "email" in out[1]["reason"]


def test_digest_collects_until_the_window_ends():
    p, state = pipeline(), UserState()
    spec = {"key": "comments", "window_s": 300, "max_items": 10}
    for i in range(4):
        assert statuses(p.on_item(state, note(i, digest=spec), T0 + i)) == ["accepted"]
    out = p.on_due(state, T0 + 300)
    assert statuses(out).count("digested") == 4 and len(releases(out)) == 1


def test_state_is_discarded_when_every_window_has_passed():
    p, state = pipeline(), UserState()
    p.on_item(state, note(channels=["sms"]), T0)
    assert not state.is_empty()
    while (due := p.next_due(state)) is not None:
        p.on_due(state, due)
    assert state.is_empty()


def test_held_queue_is_bounded():
    p, state = pipeline(max_held=2), UserState()
    for i in range(3):
        out = p.on_item(state, note(i, send_at_ms=(T0 + 60) * 1000), T0)
    assert statuses(out) == ["accepted", "rate_limited"] and len(state.held) == 2


@pytest.mark.parametrize(
    ("night_utc", "morning_utc"),
    [  # quiet 01:00-04:00 New York across the spring-forward gap (02:00 -> 03:00)
        (datetime(2026, 3, 8, 6, 30, tzinfo=UTC), datetime(2026, 3, 8, 8, 0, tzinfo=UTC)),
        # across the fall-back repeat (01:00-02:00 happens twice)
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 9, 0, tzinfo=UTC)),
    ],
)
def test_quiet_hours_across_dst(night_utc, morning_utc):
    p, state = pipeline(), UserState()
    recipient = {
        "user_id": "u1",
        "email": "u@x.io",
        "timezone": "America/New_York",
        "quiet_hours": "01:00-04:00",
    }
    out = p.on_item(state, note(recipient=recipient), night_utc.timestamp())
    assert statuses(out) == ["accepted", "held_quiet_hours"]
    assert held_until(state) == morning_utc.timestamp()


TERMINAL = {"deduplicated", "expired", "rate_limited", "digested"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 6),
            st.floats(0, 7200),
            st.sampled_from(["email", "sms"]),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_every_notification_ends_exactly_once(steps):
    """Conservation: after time runs out, each note was released, or said why not, once."""
    p, state = pipeline(), UserState()
    outcomes: dict[str, list[str]] = {}

    def record(out):
        for o in out:
            if isinstance(o, Release):
                for nid in o.note["metadata"].get("digest_of", o.note["id"]).split(","):
                    outcomes.setdefault(nid, []).append("release")
            elif o["status"] in TERMINAL:
                outcomes.setdefault(o["notification_id"], []).append(o["status"])

    now = T0
    for i, (body, advance, channel, scheduled, digest) in enumerate(steps):
        now += advance
        record(p.on_due(state, now))
        extra = {"send_at_ms": (now + 900) * 1000} if scheduled else {}
        if digest:
            extra["digest"] = {"key": "d", "window_s": 600, "max_items": 3}
        record(
            p.on_item(
                state,
                note(i, channels=[channel], content={channel: {"body": f"b{body}"}}, **extra),
                now,
            )
        )
    while (due := p.next_due(state)) is not None:
        record(p.on_due(state, max(due, now)))
        now = max(due, now)
    assert set(outcomes) == {f"n{i}" for i in range(len(steps))}
    for nid, ends in outcomes.items():
        assert len(ends) == 1 or set(ends) == {"digested", "release"}, (nid, ends)
    assert state.is_empty()


def test_channel_without_address_is_not_held():
    late = datetime(2026, 6, 1, 20, 0, tzinfo=UTC).timestamp()  # 22:00 Berlin: SMS closed
    recipient = {"user_id": "u1", "timezone": "Europe/Berlin"}
    out = pipeline().on_item(UserState(), note(channels=["sms"], recipient=recipient), late)
    assert releases(out)[0].channels == ("sms",)  # the planner dead-letters it right away
