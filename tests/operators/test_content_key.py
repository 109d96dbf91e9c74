from __future__ import annotations

import pickle
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.content_key import ContentWindow, content_key
from operators.parse import parse_request


def note(**request):
    """A real internal note, via the request parser."""
    base = {"tenant_id": "acme", "recipient": {"user_id": "u1"}, "category": "orders"}
    parsed = parse_request(
        orjson.dumps({**base, **request}), source="t/0/1", timestamp_ms=0, max_bytes=1 << 20
    )
    assert isinstance(parsed, dict), parsed
    return parsed


def test_dedup_key_wins():
    assert content_key(note(template="t", dedup_key="order-9-shipped")) == "order-9-shipped"


def test_same_content_in_any_order_has_the_same_key():
    a = note(template="shipped", data={"order": "O-9", "items": {"x": 1, "y": [1, 2]}})
    b = note(template="shipped", data={"items": {"y": [1, 2], "x": 1}, "order": "O-9"}, id="other")
    assert content_key(a) == content_key(b)
    assert len(content_key(a)) == 32 and int(content_key(a), 16) >= 0
    c1 = note(content={"email": {"subject": "Hi", "body": "B"}, "sms": {"body": "B"}})
    c2 = note(content={"sms": {"body": "B"}, "email": {"body": "B", "subject": "Hi"}})
    assert content_key(c1) == content_key(c2)


def test_tenant_and_user_are_not_part_of_the_key():
    a = note(template="t", data={"k": 1})
    b = note(template="t", data={"k": 1}, tenant_id="other", recipient={"user_id": "u2"})
    assert content_key(a) == content_key(b)


@pytest.mark.parametrize(
    "change",
    [
        {"category": "billing"},
        {"template": "t2"},
        {"data": {"k": 2}},
        {"template": None, "content": {"email": {"body": "x"}}},
    ],
)
def test_what_the_user_sees_changes_the_key(change):
    assert content_key(note(template="t", data={"k": 1})) != content_key(
        note(**{"template": "t", "data": {"k": 1}, **change})
    )


def test_non_serialisable_values_fall_back_to_str():
    base = note(template="t")
    odd = {**base, "data": {"when": datetime(2026, 1, 1, tzinfo=UTC), 1: {3, 4}, "n": 2**80}}
    same = {**base, "data": {"n": 2**80, 1: {3, 4}, "when": datetime(2026, 1, 1, tzinfo=UTC)}}
    assert content_key(odd) == content_key(same)
    assert content_key(odd) != content_key({**base, "data": {"n": 2**80 + 1}})


def test_duplicate_within_window_names_the_original():
    window = ContentWindow(10)
    state, original = window.observe(None, "k", "n-1", now=100)
    assert original is None
    state, original = window.observe(state, "k", "n-2", now=109.9)
    assert original == "n-1"  # window runs from the first acceptance, not the repeat
    assert window.next_expiry(state) == 110
    state, original = window.observe(state, "k", "n-3", now=110)
    assert original is None and window.next_expiry(state) == 120
    assert window.expire(state, now=120) is None  # last key gone: discard the state


def test_state_is_small_and_picklable():
    window = ContentWindow(60)
    state = None
    for i in range(100):
        state, _ = window.observe(state, content_key(note(template="t", data={"i": i})), "n", i)
    assert pickle.loads(pickle.dumps(state)).entries == state.entries
    assert len(pickle.dumps(state)) < 8000


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        ContentWindow(0)


steps_strategy = st.lists(
    st.tuples(st.sampled_from("abcde"), st.floats(0, 1000), st.booleans()), max_size=60
)


@given(steps_strategy)
def test_matches_a_reference_model(steps):
    """Against a brute-force model, with arbitrary (even backwards-moving) clocks."""
    window = ContentWindow(50)
    state = None
    accepted: dict[str, tuple[float, str]] = {}
    for n, (key, now, _) in enumerate(steps):
        state, original = window.observe(state, key, f"n{n}", now)
        inside = key in accepted and accepted[key][0] + 50 > now
        assert original == (accepted[key][1] if inside else None)
        if not inside:
            accepted[key] = (now, f"n{n}")
    if state is not None:  # expiry never forgets a key that is still inside its window
        latest = max(now for _, now, _ in steps)
        swept = window.expire(state, latest)
        for key, (at, _) in accepted.items():
            if at + 50 > latest:
                assert swept is not None and key in swept.entries


@given(steps_strategy)
def test_sweeps_on_a_forward_clock_keep_exactly_the_live_keys(steps):
    window = ContentWindow(50)
    state = None
    accepted: dict[str, tuple[float, str]] = {}
    for n, (key, now, sweep) in enumerate(sorted(steps, key=lambda s: s[1])):
        state, original = window.observe(state, key, f"n{n}", now)
        inside = key in accepted and accepted[key][0] + 50 > now
        assert original == (accepted[key][1] if inside else None)
        if not inside:
            accepted[key] = (now, f"n{n}")
        if sweep:
            state = window.expire(state, now)
            accepted = {k: v for k, v in accepted.items() if v[0] + 50 > now}
            assert (set(state.entries) if state else set()) == set(accepted)
            due = window.next_expiry(state)
            assert due == (min(at for at, _ in accepted.values()) + 50 if accepted else None)
