from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.dedup import IdempotencyWindow


def test_repeat_within_window_is_duplicate_and_state_expires():
    window = IdempotencyWindow(10)
    state, dup = window.observe(None, "a", now=100)
    assert not dup
    state, dup = window.observe(state, "a", now=109.9)
    assert dup
    assert window.next_expiry(state) == 110
    assert window.expire(state, now=110) is None  # last id gone: discard the key


def test_id_is_accepted_again_after_the_window():
    window = IdempotencyWindow(10)
    state, _ = window.observe(None, "a", now=0)
    state, dup = window.observe(state, "a", now=10)
    assert not dup and window.next_expiry(state) == 20


def test_state_is_small_and_picklable():
    window = IdempotencyWindow(60)
    state = None
    for i in range(100):
        state, _ = window.observe(state, f"id-{i}", now=i)
    assert pickle.loads(pickle.dumps(state)).expires == state.expires
    assert len(pickle.dumps(state)) < 4000


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        IdempotencyWindow(0)


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.floats(0, 1000)), max_size=60))
def test_matches_a_reference_model(steps):
    """Against a brute-force model, with arbitrary (even backwards-moving) clocks."""
    window = IdempotencyWindow(50)
    state = None
    accepted_at: dict[str, float] = {}
    for request_id, now in steps:
        state, dup = window.observe(state, request_id, now)
        expected = request_id in accepted_at and accepted_at[request_id] + 50 > now
        assert dup == expected
        if not dup:
            accepted_at[request_id] = now
    if state is not None:  # expiry never forgets an id that is still inside its window
        latest = max(now for _, now in steps)
        swept = window.expire(state, latest)
        for request_id, at in accepted_at.items():
            if at + 50 > latest:
                assert swept is not None and request_id in swept.expires
