"""One request fanned out to all six channels through the running engine; each local
provider server (SMTP, Twilio SMS + voice, FCM, Redis in-app, webhook) shows what it got."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest

from connectors.inapp.redis_inbox import RedisInboxConnector
from notiflow.devservices import RedisServer
from notiflow.devservices.fcm_api import FcmApi
from notiflow.devservices.twilio_api import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TwilioApi
from notiflow.engine import Engine
from notiflow.kafka.reader import TopicReader
from notiflow.producer import produce_all
from notiflow.settings import Settings
from tests.e2e.helpers import wait_for_finals

TOKEN = "fcm-device-" + "a" * 140


def midday_zone() -> str:
    """A fixed-offset zone where it is about noon now (SMS/voice only go 08:00–21:00 local)."""
    offset = 12 - datetime.now(UTC).hour
    if offset == 0:
        return "UTC"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"  # Etc/GMT-3 is UTC+3


@pytest.mark.e2e
def test_one_request_reaches_all_six_channels(engine_env, smtp, hooks, monkeypatch, tmp_path):
    with TwilioApi() as twilio, FcmApi(project_id="notiflow-e2e") as fcm, RedisServer() as redis:
        env = {
            "NOTIFLOW_TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
            "NOTIFLOW_TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
            "NOTIFLOW_TWILIO_FROM": "+15005550006",
            "NOTIFLOW_TWILIO_BASE_URL": twilio.base_url,
            "NOTIFLOW_FCM_PROJECT_ID": "notiflow-e2e",
            "NOTIFLOW_FCM_CREDENTIALS_FILE": str(fcm.write_service_account(tmp_path / "sa.json")),
            "NOTIFLOW_FCM_BASE_URL": fcm.base_url,
            "REDIS_URL": redis.url,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        kafka = {"bootstrap.servers": engine_env["KAFKA_BOOTSTRAP_SERVERS"]}
        request = {
            "id": "six-1",
            "tenant_id": "acme",
            "category": "security",
            "channels": ["email", "sms", "push", "in_app", "webhook", "voice"],
            "recipient": {
                "user_id": "u6",
                "email": "u6@example.test",
                "phone": "+14155550123",
                "push_tokens": [{"platform": "fcm", "token": TOKEN}],
                "webhook_url": hooks.url("/six"),
                "timezone": midday_zone(),
            },
            "content": {
                "email": {"subject": "New sign-in", "body": "Was this you, $name?"},
                "sms": {"body": "New sign-in. Was this you?"},
                "push": {"subject": "New sign-in", "body": "Tap to review"},
                "in_app": {"subject": "New sign-in", "body": "Review it in settings"},
                "webhook": {"body": "new sign-in", "data": {"ip": "203.0.113.9"}},
                "voice": {"body": "A new sign in to your account was detected."},
            },
            "data": {"name": "Ada"},
        }
        with Engine(settings) as engine:
            produce_all(kafka, settings.requests_topic, [(b"acme/u6", orjson.dumps(request))])
            events = TopicReader(kafka, settings.events_topic)
            statuses = wait_for_finals(events, 6, 90, engine)
            sent = {
                orjson.loads(m.value())["channel"]: orjson.loads(m.value())
                for m in events.messages
                if orjson.loads(m.value())["status"] == "sent"
            }
            events.close()

        assert statuses["sent"] == 6, statuses
        assert {e["provider"] for e in sent.values()} == {
            "smtp",
            "twilio",
            "fcm",
            "redis_inbox",
            "webhook",
        }
        assert sent["sms"]["segments"] == 1 and sent["sms"]["cost_usd"] > 0
        # email
        [mail] = smtp.messages
        assert mail.message["Subject"] == "New sign-in"
        assert "Was this you, Ada?" in mail.message.get_body().get_content()
        # sms and voice at the Twilio API
        forms = {r.path.rsplit("/", 1)[-1]: r.form for r in twilio.received if r.status < 300}
        assert forms["Messages.json"]["To"] == "+14155550123"
        assert forms["Messages.json"]["Body"] == "New sign-in. Was this you?"
        assert (
            "<Say" in forms["Calls.json"]["Twiml"]
            and "new sign in" in forms["Calls.json"]["Twiml"].lower()
        )
        # push at FCM
        [push] = fcm.messages
        assert push["token"] == TOKEN and push["notification"]["body"] == "Tap to review"
        # in-app inbox in Redis
        inbox = RedisInboxConnector(redis.url)

        async def read():
            await inbox.open()
            try:
                return await inbox.read_inbox("acme", "u6"), await inbox.unread_count("acme", "u6")
            finally:
                await inbox.close()

        entries, unread = asyncio.run(read())
        assert [e["id"] for e in entries] == ["six-1"] and unread == 1
        # signed webhook
        [hook] = hooks.received
        assert hook.signature_valid and hook.json["data"] == {"ip": "203.0.113.9"}
