from __future__ import annotations

import pytest

from operators.routing import TemplateStore, choose_channels, plan_deliveries, render


def note(**overrides):
    base = {
        "id": "n-1",
        "tenant_id": "acme",
        "user_id": "u1",
        "key": "acme/u1",
        "category": "orders",
        "priority": "normal",
        "channels": None,
        "content": None,
        "template": "order_shipped",
        "data": {"name": "Ada", "order_id": "O-9"},
        "recipient": {"user_id": "u1", "email": "u1@example.test"},
        "metadata": {},
        "requested_at_ms": 1.0,
    }
    return {**base, **overrides}


def test_channels_default_to_known_addresses():
    recipient = {
        "user_id": "u1",
        "email": "a@b.c",
        "phone": "+15551234567",
        "push_tokens": [{"platform": "fcm", "token": "t1"}],
    }
    assert choose_channels(note(recipient=recipient)) == ["email", "sms", "push"]
    assert choose_channels(note(channels=["webhook", "email", "webhook"])) == ["webhook", "email"]


def test_template_renders_subject_and_body_per_channel():
    templates = TemplateStore()
    email = render(note(), "email", templates)
    assert email["subject"] == "Your order O-9 has shipped"
    assert "Hi Ada" in email["body"]
    assert render(note(), "webhook", templates)["body"].strip() == "Order O-9 shipped."


def test_placeholders_cannot_reach_python_objects():
    rendered = render(
        note(content={"email": {"body": "${name.__class__} $missing"}}, template=None),
        "email",
        TemplateStore(),
    )
    assert rendered["body"] == "${name.__class__} $missing"


def test_undeliverable_channels_are_reported_not_dropped():
    deliveries, undeliverable = plan_deliveries(
        note(channels=["email", "sms"], template="no-such-template", content=None), TemplateStore()
    )
    assert deliveries == []
    reasons = {u.channel: u.reason for u in undeliverable}
    assert "no-such-template" in reasons["email"] and "no sms address" in reasons["sms"]


def test_one_delivery_per_push_token():
    recipient = {
        "user_id": "u1",
        "push_tokens": [{"platform": "fcm", "token": "a"}, {"platform": "apns", "token": "b"}],
    }
    deliveries, _ = plan_deliveries(
        note(recipient=recipient, content={"push": {"body": "x"}}, template=None), TemplateStore()
    )
    assert [d.address for d in deliveries] == ["fcm:a", "apns:b"]


def test_no_channel_at_all():
    _, undeliverable = plan_deliveries(note(recipient={"user_id": "u1"}), TemplateStore())
    assert undeliverable[0].channel == "" and "no channel" in undeliverable[0].reason


@pytest.mark.parametrize("template", ["welcome", "order_shipped"])
def test_builtin_templates_exist_for_email(template):
    assert TemplateStore().get(template, "email")["subject"]
