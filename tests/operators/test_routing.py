from __future__ import annotations

import pytest

from operators.routing import (
    KIND_CONTENT_INVALID,
    KIND_TEMPLATE_ERROR,
    KIND_UNDELIVERABLE,
    TemplateStore,
    choose_channels,
    content_for,
    plan_deliveries,
)


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
    email = content_for(note(), "email", templates)
    assert email.subject == "Your order O-9 has shipped"
    assert email.text == "Hi Ada, your order O-9 is on its way."
    assert "<strong>O-9</strong>" in email.html
    assert content_for(note(), "webhook", templates).text == "Order O-9 shipped."


def test_placeholders_cannot_reach_python_objects():
    rendered = content_for(
        note(content={"email": {"body": "${name.__class__} $missing"}}, template=None),
        "email",
        TemplateStore(),
    )
    assert rendered.text == "${name.__class__} $missing"
    assert rendered.subject == "${name.__class__} $missing"  # first line: email needs one


def test_inline_html_gets_escaped_values_and_email_gets_a_generated_html_part():
    data = {"name": "<b>Ada</b>", "order_id": "O-9"}
    content = {"email": {"subject": "Hi", "body": "Hi $name", "html": "<p>Hi $name</p>"}}
    rendered = content_for(note(content=content, data=data), "email", TemplateStore())
    assert rendered.html == "<p>Hi &lt;b&gt;Ada&lt;/b&gt;</p>" and rendered.text == "Hi <b>Ada</b>"
    plain = content_for(
        note(content={"email": {"subject": "s", "body": "a < b"}}), "email", TemplateStore()
    )
    assert "<p>a &lt; b</p>" in plain.html


def test_category_template_then_first_inline_content():
    inline = {"webhook": {"body": "hook"}}
    shipped = note(template=None, category="order_shipped", content=inline)
    assert content_for(shipped, "email", TemplateStore()).subject == "Your order O-9 has shipped"
    assert content_for(note(template=None, content=inline), "email", TemplateStore()).text == "hook"


def test_inline_content_is_validated_too():
    recipient = {"user_id": "u1", "phone": "+15551234567"}
    too_long = {"sms": {"body": "x" * 2000}}
    deliveries, [bad] = plan_deliveries(
        note(recipient=recipient, content=too_long, template=None), TemplateStore()
    )
    assert deliveries == [] and bad.kind == KIND_CONTENT_INVALID and "segments" in bad.reason


def test_undeliverable_channels_are_reported_not_dropped():
    deliveries, undeliverable = plan_deliveries(
        note(channels=["email", "sms"], template="no-such-template", content=None), TemplateStore()
    )
    assert deliveries == []
    reasons = {u.channel: (u.kind, u.reason) for u in undeliverable}
    assert reasons["email"][0] == KIND_TEMPLATE_ERROR and "no-such-template" in reasons["email"][1]
    assert reasons["sms"] == (KIND_UNDELIVERABLE, "no sms address for recipient")


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
    assert set(TemplateStore().resolve("acme", template, "email", None)) >= {"subject", "text"}
