"""Vonage SMS connector against the local Vonage SMS API stand-in (a real HTTP server)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors.base import (
    ConnectorError,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.sms.vonage import VonageSmsConnector
from notiflow.devservices import free_port
from notiflow.devservices.provider_api import json_reply
from notiflow.devservices.vonage_api import TEST_API_KEY, TEST_API_SECRET, VonageApi
from notiflow.settings import Settings
from tests.connectors.harness import Case, attempt, cases, check, local, nothing

SENDER = "Notiflow"
TO = "+44 7700 900123"
PRICE = float(VonageApi.PRICE_PER_PART)


@pytest.fixture
def vonage_api() -> Iterator[VonageApi]:
    with VonageApi() as api:
        yield api


def vonage(api: VonageApi, **overrides: Any) -> VonageSmsConnector:
    options: dict[str, Any] = {"sender": SENDER, "base_url": api.base_url, "timeout": 5}
    options.update(overrides)
    secret = options.pop("api_secret", TEST_API_SECRET)
    return VonageSmsConnector(TEST_API_KEY, secret, **options)


# --- one case table: what Vonage answers → how the connector classifies it -----------------
def reject(status: str, outcome: type[ConnectorError], reason: str) -> Case:
    """HTTP 200 with ``messages[0].status == status``."""
    return Case(f"status_{status}", lambda api: api.reject_next(status), outcome, reason=reason)


def reply(status: int, body: object, **headers: str) -> Callable[[VonageApi], None]:
    return lambda api: api.push(json_reply(status, body, headers))


PARTIAL = {
    "message-count": "2",
    "messages": [
        {"to": "447700900123", "message-id": "0A0000001", "status": "0", "message-price": "0.0068"},
        {"status": "5", "error-text": "Internal Error"},
    ],
}
NO_PARTS = {"message-count": "0", "messages": []}
BAD_SECRET = {"api_secret": "wrong"}


R, P = RetryableError, PermanentError
CASES = [
    Case("accepted", nothing, SendResult),
    Case("throttled_1", lambda a: a.throttle(), R, 429, 1.0, "vonage_status_1 throttled"),
    reject("2", P, "vonage_status_2 missing_parameters"),
    reject("3", P, "vonage_status_3 invalid_parameters"),
    reject("4", P, "auth_failed: vonage_status_4 invalid_credentials"),
    reject("5", R, "vonage_status_5 internal_error"),
    reject("6", P, "vonage_status_6 invalid_message"),
    reject("7", P, "vonage_status_7 number_barred"),
    reject("8", P, "auth_failed: vonage_status_8 partner_account_barred"),
    reject("9", R, "vonage_status_9 partner_quota_violation"),
    reject("10", R, "vonage_status_10 too_many_existing_binds"),
    reject("12", P, "vonage_status_12 message_too_long"),
    reject("15", P, "vonage_status_15 invalid_sender_address"),
    reject("29", P, "vonage_status_29 non_whitelisted_destination"),
    reject("99", P, "vonage_status_99 unknown_status"),
    Case("bad_secret", nothing, P, reason="auth_failed: vonage_status_4", connector=BAD_SECRET),
    Case("partial_send", reply(200, PARTIAL), P, reason="partial_send: 1 of 2 parts accepted"),
    Case("http_500", lambda a: a.script([500]), R, 500, reason="http_500"),
    Case("http_429_retry_after", reply(429, {}, **{"Retry-After": "3"}), R, 429, 3),
    Case("http_401", lambda a: a.script([401]), P, 401, reason="auth_failed: http_401"),
    Case("http_404", lambda a: a.script([404]), P, 404, reason="http_404"),
    Case("timeout", lambda a: a.slow_next(2.0), R, reason="timeout", connector={"timeout": 0.3}),
    Case("connection_dropped", lambda a: a.drop_next(), R, reason="server_disconnected"),
    Case("malformed_200", lambda a: a.malformed_next(), R, 200, reason="malformed_response"),
    Case("no_parts", reply(200, NO_PARTS), R, 200, reason="malformed_response"),
    local("invalid_number", "invalid_number", address="x"),
    local("empty_body", "empty_body", body=""),
]  # fmt: skip


@cases(CASES)
def test_classification(case: Case, vonage_api: VonageApi, make_delivery, run) -> None:
    case.arrange(vonage_api)
    delivery = make_delivery(**{"channel": "sms", "address": TO, **case.delivery})
    outcome = run(attempt(vonage(vonage_api, **case.connector), delivery))
    check(case, outcome, len(vonage_api.received))


def test_form_and_result(vonage_api: VonageApi, make_delivery, run) -> None:
    delivery = make_delivery(channel="sms", address=TO, body="Your code is 123456")
    result = run(attempt(vonage(vonage_api), delivery))
    assert isinstance(result, SendResult)
    assert vonage_api.wait_for(1, timeout=5)
    request = vonage_api.received[0]
    assert (request.method, request.path) == ("POST", "/sms/json")
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "api_key": TEST_API_KEY,
        "api_secret": TEST_API_SECRET,
        "from": SENDER,
        "to": "447700900123",
        "text": "Your code is 123456",
        "client-ref": delivery.notification_id,
    }
    assert result.provider_message_id is not None
    assert len(result.provider_message_id) == 16
    assert result.cost_usd == pytest.approx(PRICE)
    assert result.detail["segments"] == 1
    assert result.detail["encoding"] == "GSM-7"
    assert result.detail["message_ids"] == [result.provider_message_id]


def test_unicode_multipart(vonage_api: VonageApi, make_delivery, run) -> None:
    body = "Привет! Ваш заказ отправлен 😀 " * 4  # UCS-2, > 70 units
    result = run(attempt(vonage(vonage_api), make_delivery(channel="sms", address=TO, body=body)))
    assert isinstance(result, SendResult)
    assert vonage_api.received[0].form["type"] == "unicode"
    assert result.detail["encoding"] == "UCS-2"
    parts = result.detail["segments"]
    assert parts > 1
    assert len(result.detail["message_ids"]) == parts
    assert result.cost_usd == pytest.approx(parts * PRICE)


def test_sender_number_loses_plus(vonage_api: VonageApi, make_delivery, run) -> None:
    connector = vonage(vonage_api, sender="+447700900000")
    run(attempt(connector, make_delivery(channel="sms", address="+1 (415) 555-0100", body="x")))
    form = vonage_api.received[0].form
    assert (form["from"], form["to"]) == ("447700900000", "14155550100")


def test_missing_price_gives_no_cost(vonage_api: VonageApi, make_delivery, run) -> None:
    reply = {"message-count": "1", "messages": [{"status": "0", "message-id": "X1", "to": "1"}]}
    vonage_api.push(json_reply(200, reply))
    result = run(attempt(vonage(vonage_api), make_delivery(channel="sms", address=TO, body="x")))
    assert isinstance(result, SendResult)
    assert (result.provider_message_id, result.cost_usd) == ("X1", None)


def test_connect_refused_is_retryable(make_delivery, run) -> None:
    connector = VonageSmsConnector(
        TEST_API_KEY, TEST_API_SECRET, sender=SENDER, base_url=f"http://127.0.0.1:{free_port()}"
    )
    outcome = run(attempt(connector, make_delivery(channel="sms", address=TO)))
    assert isinstance(outcome, RetryableError)
    assert outcome.reason.startswith("connect_error")


def test_from_settings() -> None:
    settings = Settings(
        vonage_api_key="k",
        vonage_api_secret="s3cr3t-value",
        vonage_from="Acme",
        vonage_base_url="http://127.0.0.1:9/",
        delivery_concurrency=5,
    )
    connector = VonageSmsConnector.from_settings(settings)
    assert (connector.api_key, connector.sender) == ("k", "Acme")
    assert connector.url == "http://127.0.0.1:9/sms/json"
    assert connector.max_connections == 5
    assert "s3cr3t" not in repr(connector)
    with pytest.raises(ValueError):
        VonageSmsConnector.from_settings(
            Settings(vonage_api_key=None, vonage_api_secret="s", vonage_from="Acme")
        )
    with pytest.raises(ValueError):
        VonageSmsConnector.from_settings(
            Settings(vonage_api_key="k", vonage_api_secret="s", vonage_from=None)
        )
