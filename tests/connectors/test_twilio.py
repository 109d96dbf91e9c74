"""Twilio SMS and voice connectors against the local Twilio API stand-in (a real HTTP server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import pytest

from connectors.base import ConnectorError, PermanentError, RetryableError, SendResult
from connectors.sms.twilio import TwilioSmsConnector
from connectors.voice.twilio import TwilioVoiceConnector, say_language
from notiflow.devservices import free_port
from notiflow.devservices.twilio_api import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TwilioApi
from notiflow.settings import Settings
from tests.connectors.harness import Case, attempt, cases, check, local, nothing

SENDER = "+15005550006"
TO = "+14155550100"
PRICE = TwilioSmsConnector.PRICE_PER_SEGMENT_USD["GSM-7"]


@pytest.fixture
def twilio_api() -> Iterator[TwilioApi]:
    with TwilioApi() as api:
        yield api


def sms(api: TwilioApi, **overrides: Any) -> TwilioSmsConnector:
    options: dict[str, Any] = {"sender": SENDER, "base_url": api.base_url, "timeout": 5}
    options.update(overrides)
    token = options.pop("auth_token", TEST_AUTH_TOKEN)
    return TwilioSmsConnector(TEST_ACCOUNT_SID, token, **options)


def voice(api: TwilioApi, **overrides: Any) -> TwilioVoiceConnector:
    options: dict[str, Any] = {"sender": SENDER, "base_url": api.base_url, "timeout": 5}
    options.update(overrides)
    return TwilioVoiceConnector(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, **options)


# --- one case table: what Twilio answers → how the SMS connector classifies it -------------
def magic(number: str, code: int, outcome: type[ConnectorError] = PermanentError, **kw) -> Case:
    """Twilio's test numbers: ``To`` (or ``From``, with ``sender=True``) → a 400 with ``code``."""
    where = {"connector": {"sender": number}} if kw.pop("sender", False) else {}
    where = where or {"delivery": {"address": number}}
    return Case(f"{number}_{code}", nothing, outcome, 400, reason=f"twilio_{code}", **where)


R, P = RetryableError, PermanentError
BAD_TOKEN = {"auth_token": "wrong"}
CASES = [
    Case("queued", nothing, SendResult),
    magic("+15005550001", 21211),  # invalid To
    magic("+15005550002", 21612),  # unroutable
    magic("+15005550003", 21408),  # no permission for the region
    magic("+15005550004", 21610),  # unsubscribed (STOP)
    magic("+15005550009", 21614),  # not a mobile number
    magic("12", 21211),  # not a number at all
    magic("+15005550001", 21212, sender=True),  # invalid From
    magic("+15005550008", 21611, R, sender=True),  # sender's queue full: later
    Case("429_retry_after", lambda a: a.throttle(7), R, 429, 7, "twilio_20429"),
    Case("429_fractional", lambda a: a.throttle("0.5"), R, 429, 0.5, "twilio_20429"),
    Case("429_no_header", lambda a: a.fail_next(429, 20429), R, 429, None, "twilio_20429"),
    Case("500", lambda a: a.script([500]), R, 500, reason="twilio_20500"),
    Case("503_later", lambda a: a.fail_next(503, 20503, **{"Retry-After": "30"}), R, 503, 30),
    Case("bad_auth_401", nothing, P, 401, None, "auth_failed: twilio_20003", {}, BAD_TOKEN),
    Case("forbidden_403", lambda a: a.fail_next(403, 20003), P, 403, reason="auth_failed"),
    Case("unknown_400", lambda a: a.fail_next(400, 21999, "Odd"), P, 400, reason="twilio_21999"),
    Case("timeout", lambda a: a.slow_next(2.0), R, reason="timeout", connector={"timeout": 0.3}),
    Case("connection_dropped", lambda a: a.drop_next(), R, reason="server_disconnected"),
    Case("malformed_201", lambda a: a.malformed_next(status=201), R, 201, reason="malformed_"),
    Case("html_502", lambda a: a.malformed_next(status=502), R, 502, reason="http_502: <html>"),
    local("empty_body", "empty_body", body=""),
    local("body_too_long", "body_too_long", body="x" * 1601),
    local("no_address", "missing_address", address=""),
]  # fmt: skip


@cases(CASES)
def test_sms_classification(case: Case, twilio_api: TwilioApi, make_delivery, run) -> None:
    case.arrange(twilio_api)
    delivery = make_delivery(**{"channel": "sms", "address": TO, **case.delivery})
    outcome = run(attempt(sms(twilio_api, **case.connector), delivery))
    check(case, outcome, len(twilio_api.received))


def test_sms_form_auth_and_result(twilio_api: TwilioApi, make_delivery, run) -> None:
    callback = "https://notiflow.example/twilio/status"
    delivery = make_delivery(channel="sms", address=TO, body="Your code is 123456")
    result = run(attempt(sms(twilio_api, status_callback_url=callback), delivery))
    assert isinstance(result, SendResult)
    assert twilio_api.wait_for(1, timeout=5)
    request = twilio_api.received[0]
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.auth == (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    assert request.form == {
        "To": TO,
        "From": SENDER,
        "Body": "Your code is 123456",
        "StatusCallback": callback,
    }
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("SM")
    assert len(result.provider_message_id) == 34
    assert result.cost_usd == pytest.approx(PRICE)
    assert result.detail == {
        "segments": 1,
        "encoding": "GSM-7",
        "status": "queued",
        "cost_estimated": True,
    }


def test_sms_messaging_service_instead_of_from(twilio_api: TwilioApi, make_delivery, run) -> None:
    connector = sms(twilio_api, sender=None, messaging_service_sid="MG" + "a" * 32)
    result = run(attempt(connector, make_delivery(channel="sms", address=TO, body="hi")))
    assert isinstance(result, SendResult)
    assert result.detail["status"] == "accepted"
    form = twilio_api.received[0].form
    assert form["MessagingServiceSid"] == "MG" + "a" * 32
    assert "From" not in form
    assert "StatusCallback" not in form


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [("a" * 161, "GSM-7", 2), ("Grüße aus Köln 😀" * 5, "UCS-2", 2), ("€" * 81, "GSM-7", 2)],
)
def test_sms_segments_and_cost(
    twilio_api: TwilioApi, make_delivery, run, body: str, encoding: str, segments: int
) -> None:
    result = run(attempt(sms(twilio_api), make_delivery(channel="sms", address=TO, body=body)))
    assert isinstance(result, SendResult)
    assert (result.detail["encoding"], result.detail["segments"]) == (encoding, segments)
    per_segment = TwilioSmsConnector.PRICE_PER_SEGMENT_USD[encoding]
    assert result.cost_usd == pytest.approx(segments * per_segment)


def test_sms_connect_refused_is_retryable(make_delivery, run) -> None:
    connector = TwilioSmsConnector(
        TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, sender=SENDER, base_url=f"http://127.0.0.1:{free_port()}"
    )
    outcome = run(attempt(connector, make_delivery(channel="sms", address=TO)))
    assert isinstance(outcome, RetryableError)
    assert outcome.reason.startswith("connect_error")


def test_sms_batch_keeps_order_and_reuses_the_session(
    twilio_api: TwilioApi, make_delivery, run
) -> None:
    addresses = [TO, "+15005550001", TO, "+15005550004", TO] * 10
    deliveries = [make_delivery(channel="sms", address=a, body="hi") for a in addresses]

    async def batch() -> list:
        connector = sms(twilio_api)
        await connector.open()
        try:
            return await connector.send_batch(deliveries, concurrency=8)
        finally:
            await connector.close()

    outcomes = run(batch())
    kinds = [type(o) for o in outcomes]
    assert kinds == [SendResult, PermanentError, SendResult, PermanentError, SendResult] * 10
    assert twilio_api.count == 30


def test_sms_from_settings() -> None:
    settings = Settings(
        twilio_account_sid=TEST_ACCOUNT_SID,
        twilio_auth_token=TEST_AUTH_TOKEN,
        twilio_from=SENDER,
        twilio_status_callback_url="https://cb.example/s",
        twilio_base_url="http://127.0.0.1:9",
        delivery_concurrency=7,
    )
    connector = TwilioSmsConnector.from_settings(settings)
    assert connector.sender == SENDER
    assert connector.status_callback_url == "https://cb.example/s"
    assert connector.client.max_connections == 7
    assert connector.client.resource_url("Messages") == (
        f"http://127.0.0.1:9/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
    )
    with pytest.raises(ValueError):
        TwilioSmsConnector.from_settings(
            Settings(twilio_account_sid=None, twilio_auth_token=None, twilio_from=SENDER)
        )
    with pytest.raises(ValueError):
        TwilioSmsConnector.from_settings(
            Settings(twilio_account_sid=TEST_ACCOUNT_SID, twilio_auth_token="t", twilio_from=None)
        )


# --- voice ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("locale", "language"),
    [
        (None, "en-US"),
        ("", "en-US"),
        ("de", "de-DE"),
        ("de-AT", "de-DE"),
        ("pt-BR", "pt-BR"),
        ("pt_br", "pt-BR"),
        ("pt-PT", "pt-PT"),
        ("en-GB", "en-GB"),
        ("en-NZ", "en-US"),
        ("fr-CA", "fr-CA"),
        ("zh-TW", "zh-TW"),
        ("nb", "nb-NO"),
        ("xx-YY", "en-US"),
    ],
)
def test_say_language(locale: str | None, language: str) -> None:
    assert say_language(locale) == language


def test_voice_twiml_language_and_escaping(twilio_api: TwilioApi, make_delivery, run) -> None:
    text = 'Tom & Jerry say <hello> "now"\x07 at 5 > 4'
    delivery = make_delivery(channel="voice", address=TO, body=text, metadata={"locale": "de"})
    result = run(attempt(voice(twilio_api), delivery))
    assert isinstance(result, SendResult)
    request = twilio_api.received[0]
    assert request.path == f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Calls.json"
    assert request.auth == (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    assert (request.form["To"], request.form["From"]) == (TO, SENDER)
    twiml = request.form["Twiml"]
    assert "&amp;" in twiml and "&lt;hello&gt;" in twiml
    say = ElementTree.fromstring(twiml).find("Say")
    assert say is not None
    assert say.get("language") == "de-DE"
    assert say.text == text.replace("\x07", " ")  # XML cannot carry control characters
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("CA")
    assert result.cost_usd == pytest.approx(TwilioVoiceConnector.PRICE_PER_MINUTE_USD)
    assert result.detail["language"] == "de-DE"


VOICE_CASES = [
    Case("queued", nothing, SendResult),
    magic("+15005550001", 21217),  # invalid number
    magic("+15005550004", 21216),  # blacklisted
    Case("429_retry_after", lambda a: a.throttle(3), R, 429, 3, "twilio_20429"),
    Case("500", lambda a: a.script([500]), R, 500),
    Case("connection_dropped", lambda a: a.drop_next(), R, reason="server_disconnected"),
    local("text_too_long", "text_too_long", body="a" * 3001),
    local("twiml_too_long", "twiml_too_long", body="&" * 900),  # escaping: 900 → 4,500 chars
    local("empty_text", "empty_body", body="  "),
]  # fmt: skip


@cases(VOICE_CASES)
def test_voice_classification(case: Case, twilio_api: TwilioApi, make_delivery, run) -> None:
    case.arrange(twilio_api)
    delivery = make_delivery(**{"channel": "voice", "address": TO, **case.delivery})
    outcome = run(attempt(voice(twilio_api), delivery))
    check(case, outcome, len(twilio_api.received))


def test_voice_longest_text_is_accepted(twilio_api: TwilioApi, make_delivery, run) -> None:
    body = "a" * TwilioVoiceConnector.MAX_TEXT_CHARS
    result = run(attempt(voice(twilio_api), make_delivery(channel="voice", address=TO, body=body)))
    assert isinstance(result, SendResult)
    assert result.detail["estimated_minutes"] == 4  # 3000 chars at 900 a minute


def test_voice_from_settings() -> None:
    settings = Settings(
        twilio_account_sid=TEST_ACCOUNT_SID, twilio_auth_token="t", twilio_from=SENDER
    )
    connector = TwilioVoiceConnector.from_settings(settings)
    assert connector.sender == SENDER
    assert connector.client.base_url == "https://api.twilio.com"
    with pytest.raises(ValueError):
        TwilioVoiceConnector.from_settings(
            Settings(twilio_account_sid=TEST_ACCOUNT_SID, twilio_auth_token="t", twilio_from=None)
        )
