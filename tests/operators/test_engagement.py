"""The per-user engagement model: Beta counts with a cap, an hour histogram, Thompson sampling."""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.engagement import CHANNELS, HOUR_CAP, TRIAL_CAP, Engagement


def test_sent_and_opened_count_trials_and_successes():
    model = Engagement().sent("email").sent("email").opened("email", 19)
    assert model.observations("email") == 2
    assert model.rate("email") == pytest.approx((1 + 1) / (2 + 2))
    assert model.hours[19] == 1
    assert model.opens == 1
    assert model.observations("sms") == 0
    assert model.rate("sms") == 0.5  # the uniform prior


def test_an_open_without_a_matching_send_also_counts_a_trial():
    model = Engagement().opened("push", 8)
    assert model.observations("push") == 1
    assert model.successes[CHANNELS.index("push")] == 1


def test_unknown_channels_are_ignored_but_the_open_hour_counts():
    model = Engagement().sent("pigeon").opened("pigeon", 3)
    assert model.trials == Engagement().trials
    assert model.hours[3] == 1


def test_counts_are_halved_at_the_cap_keeping_the_rate():
    model = Engagement()
    for i in range(TRIAL_CAP - 1):
        model = model.sent("sms")
        if i % 4 == 0:
            model = model.opened("sms", None)
    before = model.rate("sms")
    model = model.sent("sms")
    assert model.observations("sms") == TRIAL_CAP // 2
    assert model.rate("sms") == pytest.approx(before, abs=0.03)


def test_hour_histogram_is_halved_at_its_cap():
    model = Engagement()
    for _ in range(HOUR_CAP - 1):
        model = model.opened("email", 7)
    model = model.opened("email", 20).opened("email", 7)
    assert model.hours[7] == HOUR_CAP // 2
    assert model.hours[20] == 0  # one old open decays away


def test_thompson_sampling_prefers_the_better_channel_and_is_deterministic():
    model = Engagement()
    for i in range(40):
        model = model.sent("email").sent("push")
        if i % 2 == 0:
            model = model.opened("push", 12)
        if i % 10 == 0:
            model = model.opened("email", 12)
    rng = random.Random(7)
    picks = [model.sample_best_channel(rng, ("email", "push")) for _ in range(500)]
    assert picks.count("push") > 480
    again = random.Random(7)
    assert [model.sample_best_channel(again, ("email", "push")) for _ in range(500)] == picks


def test_thompson_sampling_explores_when_nothing_is_known():
    rng = random.Random(1)
    picks = [Engagement().sample_best_channel(rng, ("email", "sms", "push")) for _ in range(900)]
    assert all(250 < picks.count(c) < 350 for c in ("email", "sms", "push"))


def test_sampling_needs_a_channel():
    with pytest.raises(ValueError):
        Engagement().sample_best_channel(random.Random(0), ())


def test_best_hour_needs_enough_opens_and_respects_candidates():
    model = Engagement()
    for hour in (19, 19, 19, 8, 8):
        model = model.opened("email", hour)
    assert model.best_hour(min_observations=6) is None
    assert model.best_hour(min_observations=5) == 19
    assert model.best_hour([7, 8, 9], min_observations=1) == 8
    assert model.best_hour([10, 11], min_observations=1) == 10  # ties: the earliest candidate
    assert model.best_hour([], min_observations=1) is None


def test_pickled_size_stays_small_whatever_the_history():
    model = Engagement()
    rng = random.Random(3)
    for _ in range(10_000):
        channel = rng.choice(CHANNELS)
        model = model.sent(channel)
        if rng.random() < 0.4:
            model = model.opened(channel, rng.randrange(24))
    size = len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    assert size < 300, size
    assert pickle.loads(pickle.dumps(model)) == model


@given(
    st.lists(
        st.tuples(
            st.sampled_from((*CHANNELS, "other")),
            st.booleans(),
            st.one_of(st.none(), st.integers(-1, 24)),
        ),
        max_size=400,
    )
)
def test_counts_stay_bounded_and_consistent(steps):
    model = Engagement()
    for channel, opened, hour in steps:
        model = model.opened(channel, hour) if opened else model.sent(channel)
        for trials, successes in zip(model.trials, model.successes, strict=True):
            assert 0 <= successes <= trials < TRIAL_CAP
        assert all(0 <= count < HOUR_CAP for count in model.hours)
        assert all(0 < model.rate(c) < 1 for c in CHANNELS)
