"""SendGridConnector against a real local HTTP server shaped like SendGrid (SendGridApi)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from connectors.base import (
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.email.sendgrid import SendGridConnector, rate_limit_wait
from notiflow.devservices.sendgrid_api import SendGridApi, sendgrid_error
from notiflow.settings import Settings
from tests.connectors.harness import Case, attempt, batch, cases, check

API_KEY = "SG.test-key"
SENDER = "Shop <shop@mail.example.com>"


@pytest.fixture
def api() -> Iterator[SendGridApi]:
    with SendGridApi(API_KEY) as server:
        yield server


def connector_for(api: SendGridApi, key: str = API_KEY, **kwargs: object) -> SendGridConnector:
    return SendGridConnector(key, sender=SENDER, base_url=api.base_url, timeout=5, **kwargs)  # type: ignore[arg-type]


# --- one case table: what SendGrid answers → how the connector classifies it ---------------
BAD_FIELD = sendgrid_error("The from email does not contain a valid address.", "from.email")
CASES = [
    Case("202_accepted", lambda a: None, SendResult),
    Case("400_field", lambda a: a.respond_with(400, BAD_FIELD), InvalidRequest, 400,
         reason="from.email: The from email does not contain a valid address."),
    Case("400_html_body", lambda a: a.respond_with(400, b"<html>Bad Request</html>"),
         RetryableError, 400, reason="unrecognised"),
    Case("401_auth", lambda a: a.script([401]), PermanentError, 401),
    Case("403_forbidden", lambda a: a.script([403]), PermanentError, 403),
    Case("413_too_large", lambda a: a.script([413]), InvalidRequest, 413),
    Case("429_reset", lambda a: a.throttle(30), RetryableError, 429, 30),
    Case("429_retry_after", lambda a: a.respond_with(429, headers={"Retry-After": "7"}),
         RetryableError, 429, 7),
    Case("500", lambda a: a.script([500]), RetryableError, 500),
    Case("503", lambda a: a.script([503]), RetryableError, 503),
    Case("connection_dropped", lambda a: a.drop_next(), RetryableError),
]  # fmt: skip


@cases(CASES)
def test_response_classification(case: Case, api: SendGridApi, make_delivery, run) -> None:
    case.arrange(api)
    outcome = run(attempt(connector_for(api), make_delivery()))
    check(case, outcome, len(api.received), retry_after_abs=1.5)
    if isinstance(outcome, SendResult):
        assert outcome.provider_message_id


def test_request_shape_auth_and_headers(api: SendGridApi, make_delivery, run) -> None:
    delivery = make_delivery(
        address="Alice Ä <alice@example.org>",
        subject="Grüße ✓",
        html="<p>Hallo</p>",
        category="marketing",
        metadata={"unsubscribe_url": "https://example.org/u/abc"},
    )
    result = run(attempt(connector_for(api), delivery))
    assert isinstance(result, SendResult)
    (request,) = api.received
    assert request.path == "/v3/mail/send" and request.method == "POST"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    body = request.json
    assert body["from"] == {"email": "shop@mail.example.com", "name": "Shop"}
    assert body["subject"] == "Grüße ✓"
    assert body["content"] == [
        {"type": "text/plain", "value": delivery.body},
        {"type": "text/html", "value": "<p>Hallo</p>"},
    ]
    (personalization,) = body["personalizations"]
    assert personalization["to"] == [{"email": "alice@example.org", "name": "Alice Ä"}]
    assert personalization["custom_args"]["notification_id"] == delivery.notification_id
    assert personalization["custom_args"]["tenant_id"] == "acme"
    headers = personalization["headers"]
    assert headers["List-Unsubscribe"].startswith("<https://example.org/u/abc>, <mailto:")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert result.detail == {"status": 202, "batch": 1}


def test_transactional_has_no_unsubscribe_and_subject_falls_back(
    api: SendGridApi, make_delivery, run
) -> None:
    delivery = make_delivery(category="transactional", subject=None, body="Code: 123456\nbye")
    assert isinstance(run(attempt(connector_for(api), delivery)), SendResult)
    body = api.received[0].json
    assert body["subject"] == "Code: 123456"
    assert "List-Unsubscribe" not in body["personalizations"][0]["headers"]
    assert [part["type"] for part in body["content"]] == ["text/plain"]


def test_batch_folds_identical_content_into_personalizations(
    api: SendGridApi, make_delivery, run
) -> None:
    same = [make_delivery(address=f"user{i}@example.org") for i in range(25)]
    other = make_delivery(body="A different body")
    repeat = make_delivery(address="user3@example.org")  # same address twice: own request
    outcomes = run(batch(connector_for(api), *same, other, repeat))
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert len(api.received) == 3
    sizes = sorted(len(r.json["personalizations"]) for r in api.received)
    assert sizes == [1, 1, 25]
    assert api.messages == 27
    big = next(r for r in api.received if len(r.json["personalizations"]) == 25)
    ids = [p["custom_args"]["notification_id"] for p in big.json["personalizations"]]
    assert ids == [d.notification_id for d in same]
    first_batch_ids = {o.provider_message_id for o in outcomes[:25]}
    assert len(first_batch_ids) == 1 and outcomes[0].detail["batch"] == 25


def test_batch_respects_max_batch_size(api: SendGridApi, make_delivery, run) -> None:
    connector = connector_for(api)
    connector.max_batch_size = 10  # type: ignore[misc] - instance override for the test
    deliveries = [make_delivery(address=f"u{i}@example.org") for i in range(25)]
    outcomes = run(batch(connector, *deliveries, concurrency=2))
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert sorted(len(r.json["personalizations"]) for r in api.received) == [5, 10, 10]


def test_batch_400_blames_only_the_named_personalization(
    api: SendGridApi, make_delivery, run
) -> None:
    api.reject_address("bad@example.org", "Does not contain a valid address.")
    deliveries = [make_delivery(address=f"u{i}@example.org") for i in range(3)]
    deliveries.insert(1, make_delivery(address="bad@example.org"))
    outcomes = run(batch(connector_for(api), *deliveries))
    assert [type(o) for o in outcomes] == [
        RetryableError,
        InvalidRequest,
        RetryableError,
        RetryableError,
    ]
    assert "personalizations.1.to.0.email" in outcomes[1].reason
    assert outcomes[0].reason.startswith("batch_rejected")


def test_batch_invalid_addresses_fail_locally(api: SendGridApi, make_delivery, run) -> None:
    deliveries = [make_delivery(), make_delivery(address="not-an-address")]
    outcomes = run(batch(connector_for(api), *deliveries))
    assert isinstance(outcomes[0], SendResult)
    assert isinstance(outcomes[1], InvalidRequest)
    assert len(api.received) == 1


def test_batch_whole_request_failure_fails_each(api: SendGridApi, make_delivery, run) -> None:
    api.script([503])
    deliveries = [make_delivery(address=f"u{i}@example.org") for i in range(4)]
    outcomes = run(batch(connector_for(api), *deliveries))
    assert all(isinstance(o, RetryableError) and o.status == 503 for o in outcomes)


def test_wrong_key_is_permanent(api: SendGridApi, make_delivery, run) -> None:
    outcome = run(attempt(connector_for(api, key="SG.wrong"), make_delivery()))
    assert isinstance(outcome, PermanentError) and outcome.status == 401
    assert "authorization grant is invalid" in outcome.reason


def test_timeout_is_retryable(make_delivery, run) -> None:
    with SendGridApi(API_KEY, delay_seconds=1.0) as slow:
        connector = SendGridConnector(API_KEY, base_url=slow.base_url, timeout=0.2)
        outcome = run(attempt(connector, make_delivery()))
    assert isinstance(outcome, RetryableError) and "timeout" in outcome.reason


def test_rate_limit_wait() -> None:
    now = 1_700_000_000.0
    assert rate_limit_wait({"Retry-After": "12"}, now=now) == 12
    assert rate_limit_wait({"X-RateLimit-Reset": str(int(now) + 40)}, now=now) == 40
    assert rate_limit_wait({"X-RateLimit-Reset": str(int(now * 1000) + 5000)}, now=now) == 5
    assert rate_limit_wait({"X-RateLimit-Reset": "3"}, now=now) == 3
    assert rate_limit_wait({"X-RateLimit-Reset": str(int(now) - 10)}, now=now) == 0
    assert rate_limit_wait({}, now=now) is None
    assert rate_limit_wait({"X-RateLimit-Reset": "soon"}, now=now) is None
    assert rate_limit_wait({"X-RateLimit-Reset": str(time.time() + 60)}) == pytest.approx(60, 1)


def test_from_settings_and_validation() -> None:
    settings = Settings(sendgrid_api_key="SG.k", sendgrid_base_url="http://sg.local/")
    connector = SendGridConnector.from_settings(settings)
    assert connector.url == "http://sg.local/v3/mail/send"
    assert connector.max_batch_size == 1000
    with pytest.raises(ValueError):
        SendGridConnector("")
    with pytest.raises(ValueError):
        SendGridConnector("SG.k", sender="no address")
    with pytest.raises(ValueError):
        SendGridConnector("SG.k", timeout=0)
