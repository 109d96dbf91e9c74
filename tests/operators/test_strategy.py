"""Delivery strategies: every strategy, sequential fallback, smart learning, A/B-ready config."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.digest import DigestCollector
from operators.engagement import Engagement
from operators.events import note_event
from operators.strategy import (
    Release,
    StrategyConfig,
    StrategyEngine,
    StrategyState,
    ToDigest,
    resolve_strategy,
)
from tests.operators.test_user_pipeline import T0, note

TOKENS = [{"platform": "fcm", "token": "t1"}]
RECIPIENT = {
    "user_id": "u1",
    "email": "u1@example.test",
    "phone": "+4915112345678",
    "push_tokens": TOKENS,
    "timezone": "Europe/Berlin",
}


def n(i: int = 1, **overrides) -> dict:
    return note(i, **{"channels": None, "recipient": dict(RECIPIENT), **overrides})


def engine(config: dict | None = None, **kwargs) -> StrategyEngine:
    return StrategyEngine(StrategyConfig.from_dict(config or {}), **kwargs)


def event(of: dict, status: str, channel: str | None, at: float, **fields) -> dict:
    return note_event(of, status, at * 1000, channel=channel, **fields)


def kinds(out) -> list:
    return [
        ("release", o.channels)
        if isinstance(o, Release)
        else ("digest", o.note["digest"]["key"])
        if isinstance(o, ToDigest)
        else (o["status"], o["channel"])
        for o in out
    ]


def berlin(hour: int, minute: int = 0) -> float:
    return datetime(2026, 6, 1, hour - 2, minute, tzinfo=UTC).timestamp()  # CEST = UTC+2


# --- config and resolution -------------------------------------------------------------------
FULL = {
    "default": "immediate",
    "tenants": {
        "acme": {"strategy": "sequential", "categories": {"marketing": "smart"}},
        "globex": "cost",
    },
    "costs": {"sms": 0.01},
    "sequential": {"timeout_s": 300, "timeouts": {"email": 600}, "order": ["email", "sms"]},
    "smart": {"explore_fraction": 0.2, "max_delay_s": 3600, "min_observations": 3},
    "cost": {"min_rate": 0.05},
    "priority": {"low": "digest", "digest": {"key": "later", "window_s": 600}},
    "limits": {"max_pending": 10, "max_delayed": 5},
    "engagement": {"track": True, "ttl_s": 86400},
}


def test_config_parses_every_section():
    config = StrategyConfig.from_dict(FULL)
    assert config.tenants == {"acme": "sequential", "globex": "cost"}
    assert config.categories == {("acme", "marketing"): "smart"}
    assert config.costs["sms"] == 0.01 and config.costs["voice"] == 0.013
    assert (config.timeout_for("email"), config.timeout_for("sms")) == (600, 300)
    assert config.order == ("email", "sms")
    assert (config.explore_fraction, config.max_delay_s, config.min_observations) == (0.2, 3600, 3)
    assert config.low_digest == {"key": "later", "window_s": 600, "max_items": 50}
    assert (config.max_pending, config.max_delayed, config.track_engagement) == (10, 5, True)
    assert StrategyConfig.from_dict(None) == StrategyConfig()


@pytest.mark.parametrize(
    "bad",
    [
        {"default": "loud"},
        {"tenants": {"acme": "loud"}},
        {"tenants": {"acme": {"categories": {"x": "loud"}}}},
        {"costs": {"pigeon": 1}},
        {"costs": {"sms": -1}},
        {"sequential": {"timeout_s": 0}},
        {"sequential": {"order": ["email", "fax"]}},
        {"smart": {"explore_fraction": 1.5}},
        {"smart": {"max_delay": 10}},
        {"priority": {"low": "drop"}},
        {"priority": {"digest": {"key": ""}}},
        {"priority": {"digest": {"max_items": 2.5}}},
        {"engagement": {"track": "yes"}},
        {"strategy": "smart"},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        StrategyConfig.from_dict(bad)


def test_resolution_order():
    config = StrategyConfig.from_dict(FULL)
    assert resolve_strategy(n(strategy="priority"), config) == "priority"  # per request
    assert resolve_strategy(n(category="marketing"), config) == "smart"  # tenant × category
    assert resolve_strategy(n(), config) == "sequential"  # tenant
    assert resolve_strategy(n(tenant_id="globex"), config) == "cost"
    assert resolve_strategy(n(tenant_id="initech"), config) == "immediate"  # global
    assert resolve_strategy(n(strategy="bogus"), config) == "sequential"


# --- immediate, priority, cost -----------------------------------------------------------------
def test_immediate_is_a_pass_through_tagged_with_the_strategy():
    state = StrategyState()
    out = engine().on_release(state, n(), ("email", "sms"), T0)
    assert kinds(out) == [("release", ("email", "sms"))]
    assert out[0].note["strategy"] == out[0].note["metadata"]["strategy"] == "immediate"
    assert event(out[0].note, "sent", "email", T0)["strategy"] == "immediate"  # on events
    assert state.is_empty() and engine().next_due(state) is None


def test_empty_channel_releases_pass_through_for_every_strategy():
    for name in ("sequential", "priority", "cost", "smart"):
        out = engine({"default": name}).on_release(StrategyState(), n(), (), T0)
        assert kinds(out) == [("release", ())]


def test_priority_critical_and_normal_go_everywhere():
    e = engine({"default": "priority"})
    for priority in ("critical", "high", "normal"):
        out = e.on_release(StrategyState(), n(priority=priority), ("sms", "email", "push"), T0)
        assert kinds(out) == [("release", ("sms", "email", "push"))]


def test_priority_low_goes_to_the_cheapest_channel_or_a_digest():
    cheap = engine({"default": "priority"})
    out = cheap.on_release(StrategyState(), n(priority="low"), ("sms", "email"), T0)
    assert kinds(out) == [("release", ("email",))]
    digest = engine({"default": "priority", "priority": {"low": "digest"}})
    out = digest.on_release(StrategyState(), n(priority="low"), ("sms", "email"), T0)
    assert kinds(out) == [("digest", "low_priority")]
    assert out[0].note["digest"] == {"key": "low_priority", "window_s": 3600, "max_items": 50}
    assert out[0].note["strategy"] == "priority"
    DigestCollector().add(None, out[0].note, out[0].note["digest"], T0)  # the pipeline takes it
    # a flushed digest (or a note already in one) is never digested again
    flushed = n(priority="low", category="digest")
    assert kinds(digest.on_release(StrategyState(), flushed, ("sms", "email"), T0)) == [
        ("release", ("email",))
    ]


def test_cost_takes_the_cheapest_then_fastest_channel():
    e = engine({"default": "cost"})
    assert e.on_release(StrategyState(), n(), ("sms", "email"), T0)[0].channels == ("email",)
    assert e.on_release(StrategyState(), n(), ("email", "in_app", "push"), T0)[0].channels == (
        "push",
    )
    pricey = engine({"default": "cost", "costs": {"email": 0.5}})
    assert pricey.on_release(StrategyState(), n(), ("sms", "email"), T0)[0].channels == ("sms",)


def test_cost_skips_a_channel_the_user_ignores():
    model = Engagement()
    for _ in range(10):
        model = model.sent("push")
    state = StrategyState(engagement=model)
    out = engine({"default": "cost"}).on_release(state, n(), ("push", "email"), T0)
    assert out[0].channels == ("email",)


# --- sequential ----------------------------------------------------------------------------------
SEQ = {"default": "sequential"}


def test_sequential_starts_with_the_cheapest_or_the_requested_first_channel():
    e = engine(SEQ)
    state = StrategyState()
    assert kinds(e.on_release(state, n(), ("sms", "email", "push"), T0)) == [("release", ("push",))]
    assert state.pending["n1"].remaining == ("email", "sms")
    assert e.next_due(state) == T0 + 300
    explicit = n(2, channels=["sms", "email"])
    assert kinds(e.on_release(state, explicit, ("sms", "email"), T0)) == [("release", ("sms",))]
    configured = engine({**SEQ, "sequential": {"order": ["sms", "push"]}})
    out = configured.on_release(StrategyState(), n(), ("email", "push", "sms"), T0)
    assert kinds(out) == [("release", ("sms",))]


def test_sequential_falls_back_on_a_failure_event_and_stops_on_delivered():
    e, state, first = engine(SEQ), StrategyState(), n()
    e.on_release(state, first, ("email", "sms"), T0)
    tagged = state.pending["n1"].note
    assert e.on_event(state, event(tagged, "sent", "email", T0 + 1), T0 + 1) == []
    out = e.on_event(state, event(tagged, "bounced", "email", T0 + 5, reason="550"), T0 + 5)
    assert kinds(out) == [("failed_over", "email"), ("release", ("sms",))]
    assert out[0]["reason"] == "sequential: bounced on email: 550; trying sms"
    assert out[1].note["strategy"] == "sequential"
    assert e.next_due(state) == T0 + 5 + 300
    assert e.on_event(state, event(tagged, "delivered", "sms", T0 + 9), T0 + 9) == []
    assert state.is_empty()
    assert e.on_due(state, T0 + 10_000) == []


def test_sequential_falls_back_when_no_receipt_arrives_in_time():
    e, state = engine({**SEQ, "sequential": {"timeouts": {"email": 600}}}), StrategyState()
    e.on_release(state, n(), ("email", "sms", "voice"), T0)
    tagged = state.pending["n1"].note
    e.on_event(state, event(tagged, "sent", "email", T0 + 1), T0 + 1)
    assert e.on_due(state, T0 + 599) == []
    out = e.on_due(state, T0 + 600)
    assert kinds(out) == [("failed_over", "email"), ("release", ("sms",))]
    assert "no delivered/opened receipt on email within 600 s" in out[0]["reason"]
    out = e.on_due(state, T0 + 900)
    assert kinds(out) == [("failed_over", "sms"), ("release", ("voice",))]
    out = e.on_due(state, T0 + 1200)
    assert kinds(out) == [("failed", None)]
    assert "no channel left (tried email, sms, voice)" in out[0]["reason"]
    assert state.is_empty()


def test_sequential_opened_on_any_tried_channel_stops_it():
    e, state = engine(SEQ), StrategyState()
    e.on_release(state, n(), ("email", "sms"), T0)
    tagged = state.pending["n1"].note
    e.on_due(state, T0 + 300)  # email timed out: sms is sent
    assert e.on_event(state, event(tagged, "opened", "email", T0 + 400), T0 + 400) == []
    assert state.is_empty()


def test_sequential_duplicate_events_do_not_advance_twice():
    e, state = engine(SEQ), StrategyState()
    e.on_release(state, n(), ("email", "sms", "voice"), T0)
    tagged = state.pending["n1"].note
    failed = event(tagged, "failed", "email", T0 + 5)
    assert len(e.on_event(state, failed, T0 + 5)) == 2
    assert e.on_event(state, failed, T0 + 6) == []  # replayed: email is no longer current
    assert state.pending["n1"].current == "sms"
    sms_failed = event(tagged, "failed", "sms", T0 + 7)
    assert kinds(e.on_event(state, sms_failed, T0 + 7))[1] == ("release", ("voice",))
    assert e.on_event(state, sms_failed, T0 + 8) == []
    assert e.on_event(state, event(tagged, "failed", "email", T0 + 9), T0 + 9) == []
    assert state.pending["n1"].tried == ("email", "sms", "voice")


def test_sequential_waits_for_every_address_of_the_channel_to_fail():
    two_tokens = [*TOKENS, {"platform": "apns", "token": "t2"}]
    e, state = engine(SEQ), StrategyState()
    e.on_release(state, n(recipient={**RECIPIENT, "push_tokens": two_tokens}), ("push", "sms"), T0)
    tagged = state.pending["n1"].note
    first = event(tagged, "token_invalidated", "push", T0 + 1, discriminator="fcm:t1")
    assert e.on_event(state, first, T0 + 1) == []
    assert e.on_event(state, first, T0 + 2) == []  # the same one again
    second = event(tagged, "failed", "push", T0 + 3, discriminator="apns:t2")
    assert kinds(e.on_event(state, second, T0 + 3))[1] == ("release", ("sms",))


def test_sequential_skips_sms_outside_local_hours_unless_critical():
    late = berlin(21, 58)
    e, state = engine(SEQ), StrategyState()
    e.on_release(state, n(channels=["email", "sms", "push"]), ("email", "sms", "push"), late)
    out = e.on_due(state, late + 300)  # 22:03 in Berlin
    assert kinds(out) == [("failed_over", "email"), ("release", ("push",))]
    assert "skipped sms (outside local hours)" in out[0]["reason"]
    critical = n(2, channels=["email", "sms"], priority="critical")
    e.on_release(state, critical, ("email", "sms"), late)
    assert ("release", ("sms",)) in kinds(e.on_due(state, late + 300))


def test_sequential_single_channel_needs_no_state_and_later_channels_join():
    e, state = engine(SEQ), StrategyState()
    assert kinds(e.on_release(state, n(), ("email",), T0)) == [("release", ("email",))]
    assert state.is_empty()
    e.on_release(state, n(2), ("email", "push"), T0)
    assert e.on_release(state, n(2), ("sms",), T0 + 60) == []  # released later (e.g. deferred)
    assert state.pending["n2"].remaining == ("email", "sms")


def test_sequential_sent_counts_as_success_where_configured_and_bounds_pending():
    e = engine(
        {**SEQ, "sequential": {"success_on_sent": ["webhook"]}, "limits": {"max_pending": 1}}
    )
    state = StrategyState()
    e.on_release(state, n(channels=["webhook", "email"]), ("webhook", "email"), T0)
    tagged = state.pending["n1"].note
    out = e.on_release(state, n(2), ("email", "sms"), T0)  # over max_pending: all at once
    assert kinds(out) == [("release", ("email", "sms"))]
    e.on_event(state, event(tagged, "sent", "webhook", T0 + 1), T0 + 1)
    assert state.is_empty()


ACTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("event"),
            st.sampled_from(
                ["sent", "failed", "dead_lettered", "bounced", "delivered", "opened", "retrying"]
            ),
            st.sampled_from(["email", "sms", "push", "voice"]),
        ),
        st.tuples(st.just("tick"), st.integers(0, 700), st.just("")),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(st.permutations(["email", "sms", "push", "voice"]), ACTIONS)
def test_sequential_sends_one_channel_at_a_time_and_never_repeats(channels, actions):
    e, state, now = engine(SEQ), StrategyState(), T0
    out = e.on_release(state, n(channels=channels), tuple(channels), now)
    tagged = out[0].note
    sent: list[str] = list(out[0].channels)
    failovers = finished = 0
    for kind, what, channel in actions:
        if kind == "tick":
            now += what
            out = e.on_due(state, now)
        else:
            out = e.on_event(state, event(tagged, what, channel, now), now)
        for item in out:
            if isinstance(item, Release):
                assert len(item.channels) == 1 and finished == 0
                sent += item.channels
            elif item["status"] == "failed_over":
                failovers += 1
            else:
                finished += 1
    assert len(sent) == len(set(sent)) == failovers + 1
    assert sent == channels[: len(sent)]
    assert finished <= 1 and (finished == 0 or state.is_empty())


# --- smart -----------------------------------------------------------------------------------
SMART = {"default": "smart"}


def test_smart_sends_on_one_channel_deterministically():
    e = engine(SMART)
    picks = [e.on_release(StrategyState(), n(), ("email", "sms", "push"), T0)[0] for _ in range(5)]
    assert all(pick == picks[0] for pick in picks)
    release = picks[0]
    assert len(release.channels) == 1 and release.note["strategy"] == "smart"
    spread = {
        e.on_release(StrategyState(), n(i), ("email", "sms", "push"), T0)[0].channels
        for i in range(60)
    }
    assert len(spread) == 3  # with no history every channel gets tried


def test_smart_learns_from_events_and_prefers_the_channel_that_gets_opened():
    e, state = engine(SMART), StrategyState()
    for i in range(40):
        out = e.on_release(state, n(i), ("email", "push"), T0 + i)
        (release,) = out
        channel = release.channels[0]
        e.on_event(state, event(release.note, "sent", channel, T0 + i), T0 + i)
        if channel == "push":
            e.on_event(state, event(release.note, "opened", channel, T0 + i + 1), T0 + i + 1)
    assert state.engagement.rate("push") > 0.8 > 0.25 > state.engagement.rate("email")
    later = [e.on_release(state, n(100 + i), ("email", "push"), T0)[0] for i in range(100)]
    assert sum(r.channels == ("push",) for r in later) >= 85  # explores ~5 % on email


def test_engagement_events_are_idempotent_and_need_tracking():
    e, state = engine(SMART), StrategyState()
    e.on_release(state, n(), ("email",), T0)
    sent = event(n(), "sent", "email", T0)
    opened = event(n(), "opened", "email", berlin(19, 30))
    for item in (sent, sent, opened, opened, event(n(), "clicked", "email", berlin(19, 31))):
        e.on_event(state, item, T0)
    assert state.engagement.observations("email") == 1
    assert state.engagement.successes[0] == 1
    assert state.engagement.hours[19] == 1  # in the user's local time
    untracked = StrategyState()
    engine().on_event(untracked, sent, T0)
    assert untracked.is_empty()
    tracked = StrategyState()
    engine({"engagement": {"track": True}}).on_event(tracked, sent, T0)
    assert tracked.engagement.observations("email") == 1


def evening_person(opens: int = 6) -> StrategyState:
    model = Engagement()
    for _ in range(opens):
        model = model.sent("email").opened("email", 19)
    return StrategyState(engagement=model, timezone="Europe/Berlin", touched=int(T0))


def test_smart_holds_a_send_until_the_users_best_hour():
    e, state = engine(SMART), evening_person()
    out = e.on_release(state, n(), ("email",), T0)  # 14:00 in Berlin
    assert kinds(out) == [("scheduled", "email")]
    assert out[0]["reason"] == "smart send time: best hour 19:00 local"
    assert e.next_due(state) == berlin(19)
    assert e.on_due(state, berlin(18, 59)) == []
    out = e.on_due(state, berlin(19))
    assert kinds(out) == [("release", ("email",))]
    assert out[0].note["strategy"] == "smart"


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ({"smart": {"max_delay_s": 3 * 3600}}, {}),  # 19:00 is out of reach
        ({"smart": {"min_observations": 10}}, {}),  # too few opens to trust
        ({}, {"priority": "critical"}),
        ({}, {"send_at_ms": T0 * 1000}),  # the producer chose the time
        ({}, {"recipient": {**RECIPIENT, "quiet_hours": "18:30-21:00"}}),
        ({}, {"expires_at_ms": (T0 + 3600) * 1000}),
    ],
)
def test_smart_sends_now_when_the_best_hour_is_not_usable(config, overrides):
    out = engine({**SMART, **config}).on_release(evening_person(), n(**overrides), ("email",), T0)
    assert kinds(out) == [("release", ("email",))]


def test_smart_delayed_send_that_expired_meanwhile_is_reported_not_sent():
    e, state = engine(SMART), evening_person()
    e.on_release(state, n(expires_at_ms=berlin(19, 30) * 1000), ("email",), T0)
    assert e.next_due(state) == berlin(19)
    assert kinds(e.on_due(state, berlin(20))) == [("expired", None)]  # the timer fired late


def test_engagement_is_dropped_after_its_ttl():
    e, state = engine({**SMART, "engagement": {"ttl_s": 3600}}), StrategyState()
    e.on_release(state, n(), ("email",), T0)
    assert not state.is_empty()
    assert e.next_due(state) == T0 + 3600
    e.on_due(state, T0 + 3600)
    assert state.is_empty() and e.next_due(state) is None


def test_pickled_state_stays_small():
    e, state = engine(SMART), StrategyState()
    rng = random.Random(5)
    for i in range(500):
        (release,) = e.on_release(state, n(i), ("email", "sms", "push", "in_app"), T0 + i)
        if isinstance(release, Release):
            channel = release.channels[0]
            e.on_event(state, event(release.note, "sent", channel, T0 + i), T0 + i)
            if rng.random() < 0.3:
                e.on_event(state, event(release.note, "opened", channel, T0 + i), T0 + i)
    e.on_due(state, T0 + 10**6 - 1)  # release what was delayed
    engagement = len(pickle.dumps(state.engagement, protocol=pickle.HIGHEST_PROTOCOL))
    whole = len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    assert engagement < 300, engagement
    assert whole < 600, whole
    assert pickle.loads(pickle.dumps(state)) == state


# --- the synthetic population ------------------------------------------------------------------
POP_CHANNELS = ("email", "sms", "push", "in_app")
USERS = 2000
ROUNDS = 20
LAST = 5  # rounds measured at the end


def population(seed: int) -> list[tuple[str, dict[str, float]]]:
    """Per user: the true best channel and per-channel open probabilities."""
    rng = random.Random(seed)
    users = []
    for _ in range(USERS):
        best = rng.choice(POP_CHANNELS)
        probs = {c: rng.uniform(0.02, 0.2) for c in POP_CHANNELS}
        probs[best] = rng.uniform(0.45, 0.75)
        users.append((best, probs))
    return users


def simulate(strategy: str, users, seed: int) -> tuple[float, int, float]:
    """(share of the last rounds' sends on the user's best channel, users whose last
    notification went to their best channel, open rate over all rounds)."""
    e = engine({"default": strategy})
    rng = random.Random(seed)
    on_best = last_best = opens = sends = 0
    for u, (best, probs) in enumerate(users):
        state = StrategyState()
        user = f"user-{u}"
        recipient = {**RECIPIENT, "user_id": user}
        channel = ""
        for r in range(ROUNDS):
            now = T0 + r * 86400  # one notification a day, 14:00 local
            note_r = n(r, user_id=user, key=f"acme/{user}", recipient=recipient)
            out = e.on_release(state, note_r, POP_CHANNELS, now)
            due = e.next_due(state)
            if not any(isinstance(o, Release) for o in out) and due is not None:
                out = e.on_due(state, due)  # a smart send held for a better hour
            (release,) = [o for o in out if isinstance(o, Release)]
            channel = release.channels[0]
            sent = {"notification_id": note_r["id"], "status": "sent", "channel": channel}
            e.on_event(state, sent, now)  # the fields on_event reads; occurred_at: now
            sends += 1
            if rng.random() < probs[channel]:
                opens += 1
                e.on_event(state, {**sent, "status": "opened"}, now + 60)
            if r >= ROUNDS - LAST:
                on_best += channel == best
        last_best += channel == best
    return on_best / (USERS * LAST), last_best, opens / sends


def test_smart_reaches_more_users_on_their_best_channel_than_cheapest_first():
    users = population(seed=2026)
    baseline = simulate("cost", users, seed=1)  # immediate's cheapest-first: always push
    smart = simulate("smart", users, seed=1)
    print(f"\ncheapest-first: {baseline}\nsmart:          {smart}")
    assert baseline[0] == pytest.approx(0.25, abs=0.03)
    assert smart[0] > baseline[0] + 0.30
    assert smart[1] > baseline[1] * 2
    assert smart[2] > baseline[2] + 0.1
