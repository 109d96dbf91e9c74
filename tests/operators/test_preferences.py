"""Profile merge and preference filtering: request values win, every suppression says why."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.preferences import (
    PreferencePolicy,
    TenantPolicy,
    filter_channels,
    merge_profile,
    webpush_token,
)
from schemas.profile import UserProfile
from schemas.request import Channel

CHANNELS = [c.value for c in Channel]
POLICY = PreferencePolicy.from_config(
    {
        "*": {"consent_required": ["sms"]},
        "acme": {"mandatory_categories": ["security"], "consent_required": ["sms", "voice"]},
        "open": {"consent_required": []},
    }
)


def note(category: str = "marketing", tenant: str = "acme", **recipient) -> dict:
    return {
        "tenant_id": tenant,
        "category": category,
        "priority": "normal",
        "recipient": {"user_id": "u1", **recipient},
    }


def consent(channel: str, granted: bool, at: str, source: str = "web") -> dict:
    return {"channel": channel, "granted": granted, "at": at, "source": source}


def test_request_values_win_and_profile_fills_the_rest():
    profile = {
        "email": "profile@x.test",
        "phone": "+4915112345678",
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
        "quiet_hours": "22:00-07:00",
        "push_tokens": [{"platform": "fcm", "token": "f1", "device_id": "pixel"}],
        "webpush_subscriptions": [
            {"endpoint": "https://push.test/1", "keys": {"p256dh": "P", "auth": "A"}}
        ],
    }
    original = note(email="request@x.test")
    merged = merge_profile(original, profile)
    recipient = merged["recipient"]
    assert recipient["email"] == "request@x.test"
    assert recipient["phone"] == "+4915112345678" and recipient["locale"] == "de-DE"
    assert recipient["quiet_hours"] == "22:00-07:00" and recipient["timezone"] == "Europe/Berlin"
    assert recipient["push_tokens"] == [
        {"platform": "fcm", "token": "f1"},
        {
            "platform": "webpush",
            "token": '{"endpoint":"https://push.test/1","keys":{"p256dh":"P","auth":"A"}}',
        },
    ]
    assert original["recipient"] == {"user_id": "u1", "email": "request@x.test"}  # unchanged
    own_tokens = note(push_tokens=[{"platform": "apns", "token": "a1"}])
    assert merge_profile(own_tokens, profile)["recipient"]["push_tokens"] == [
        {"platform": "apns", "token": "a1"}
    ]
    assert merge_profile(original, None) == original


def test_webpush_token_is_compact_and_ignores_extra_fields():
    subscription = {"keys": {"auth": "A", "p256dh": "P"}, "endpoint": "https://e", "device_id": "d"}
    assert orjson.loads(webpush_token(subscription)) == {
        "endpoint": "https://e",
        "keys": {"p256dh": "P", "auth": "A"},
    }
    assert " " not in webpush_token(subscription)


@pytest.mark.parametrize(
    ("opt_outs", "reason"),
    [
        ({"channels": ["email"]}, "user opted out of email"),
        ({"categories": ["marketing"]}, "user opted out of category marketing"),
        ({"category_channels": {"marketing": ["email"]}}, "user opted out of marketing on email"),
    ],
)
def test_opt_outs_suppress_with_a_reason(opt_outs, reason):
    eligible, suppressed = filter_channels(
        note(), ["email", "push"], {"opt_outs": opt_outs}, POLICY
    )
    assert ("email", reason) in suppressed
    assert "email" not in eligible


def test_category_channel_opt_out_is_only_for_that_category():
    profile = {"opt_outs": {"category_channels": {"marketing": ["email"]}}}
    assert filter_channels(note("billing"), ["email"], profile, POLICY) == (["email"], [])


def test_consent_required_missing_granted_and_withdrawn():
    channels = ["sms", "voice", "email"]
    eligible, suppressed = filter_channels(note(), channels, None, POLICY)
    assert eligible == ["email"]
    assert suppressed == [("sms", "no consent for sms"), ("voice", "no consent for voice")]

    profile = {
        "consents": [
            consent("sms", True, "2026-01-01T00:00:00Z"),
            consent("sms", False, "2026-03-01T10:00:00+02:00", source="support"),
            consent("voice", False, "2026-01-01T00:00:00Z"),
            consent("voice", True, "2026-02-01T00:00:00Z", source="app"),
            consent("email", False, "2026-01-05T00:00:00Z"),
        ]
    }
    eligible, suppressed = filter_channels(note(), channels, profile, POLICY)
    assert eligible == ["voice"]
    assert suppressed == [
        ("sms", "consent for sms withdrawn at 2026-03-01T08:00:00.000Z (source: support)"),
        ("email", "consent for email withdrawn at 2026-01-05T00:00:00.000Z (source: web)"),
    ]


def test_latest_consent_wins_regardless_of_list_order():
    profile = {
        "consents": [
            consent("sms", True, "2026-05-01T00:00:00Z"),
            consent("sms", False, "2026-04-01T00:00:00Z"),
        ]
    }
    assert filter_channels(note(), ["sms"], profile, POLICY) == (["sms"], [])


def test_mandatory_category_ignores_opt_outs_and_consent():
    profile = {
        "opt_outs": {"channels": ["sms", "email"], "categories": ["security"]},
        "consents": [consent("sms", False, "2026-01-01T00:00:00Z")],
    }
    assert filter_channels(note("security"), ["sms", "email", "voice"], profile, POLICY) == (
        ["sms", "email", "voice"],
        [],
    )
    # mandatory only for acme; priority alone never bypasses an opt-out
    critical = {**note("security", tenant="other"), "priority": "critical"}
    eligible, suppressed = filter_channels(critical, ["email"], profile, POLICY)
    assert eligible == [] and suppressed == [("email", "user opted out of email")]


def test_policy_defaults_inherit_and_validate():
    assert POLICY.for_tenant("unknown") == TenantPolicy(frozenset(), frozenset({"sms"}))
    assert POLICY.for_tenant("open").consent_required == frozenset()
    assert POLICY.for_tenant("open").mandatory_categories == frozenset()
    assert PreferencePolicy.from_config("{}").for_tenant("x") == TenantPolicy()
    assert PreferencePolicy.from_config(b'{"t": {"mandatory_categories": ["otp"]}}').for_tenant(
        "t"
    ).mandatory_categories == frozenset({"otp"})
    for bad in (
        "[]",
        {"t": []},
        {"t": {"consent_required": ["fax"]}},
        {"t": {"mandatory": []}},
        {"t": {"mandatory_categories": "security"}},
    ):
        with pytest.raises(ValueError):
            PreferencePolicy.from_config(bad)


def test_stored_profile_shape_is_accepted():
    stored = UserProfile(
        tenant_id="acme",
        user_id="u1",
        opt_outs={"categories": ["marketing"]},
        consents=[consent("sms", True, "2026-01-01T00:00:00Z")],
    ).model_dump(mode="json", exclude_none=True)
    eligible, suppressed = filter_channels(note("billing"), ["sms", "email"], stored, POLICY)
    assert eligible == ["sms", "email"] and suppressed == []
    assert filter_channels(note(), ["sms"], stored, POLICY)[1] == [
        ("sms", "user opted out of category marketing")
    ]


channel_lists = st.lists(st.sampled_from(CHANNELS), max_size=8)
consents = st.lists(
    st.builds(
        consent,
        st.sampled_from(CHANNELS),
        st.booleans(),
        st.sampled_from(["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"]),
    ),
    max_size=6,
)
profiles = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "opt_outs": st.fixed_dictionaries(
                {
                    "channels": st.lists(st.sampled_from(CHANNELS), max_size=3),
                    "categories": st.lists(st.sampled_from(["marketing", "security"]), max_size=2),
                    "category_channels": st.dictionaries(
                        st.sampled_from(["marketing", "billing"]),
                        st.lists(st.sampled_from(CHANNELS), max_size=3),
                        max_size=2,
                    ),
                }
            ),
            "consents": consents,
        }
    ),
)


@given(
    channels=channel_lists,
    profile=profiles,
    category=st.sampled_from(["marketing", "security", "billing"]),
    tenant=st.sampled_from(["acme", "other", "open"]),
)
def test_every_channel_is_eligible_or_suppressed_exactly_once(channels, profile, category, tenant):
    eligible, suppressed = filter_channels(note(category, tenant), channels, profile, POLICY)
    suppressed_channels = [c for c, _ in suppressed]
    assert sorted(eligible + suppressed_channels) == sorted(channels)
    assert not set(eligible) & set(suppressed_channels)
    assert all(reason for _, reason in suppressed)
    if tenant == "acme" and category == "security":
        assert eligible == channels
