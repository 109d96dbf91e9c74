"""MailgunConnector against a real local HTTP server shaped like Mailgun (MailgunApi)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from connectors.base import (
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.email.mailgun import MailgunConnector
from notiflow.devservices.mailgun_api import MailgunApi, mailgun_error
from notiflow.settings import Settings
from tests.connectors.harness import Case, attempt, cases, check

API_KEY = "key-test"
DOMAIN = "mg.example.org"


@pytest.fixture
def api() -> Iterator[MailgunApi]:
    with MailgunApi(API_KEY, DOMAIN) as server:
        yield server


def connector_for(
    api: MailgunApi, key: str = API_KEY, domain: str = DOMAIN, **kwargs: object
) -> MailgunConnector:
    sender = f"Shop <shop@{DOMAIN}>"
    return MailgunConnector(key, domain, sender=sender, base_url=api.base_url, timeout=5, **kwargs)  # type: ignore[arg-type]


# --- one case table: what Mailgun answers → how the connector classifies it ----------------
CASES = [
    Case("200_queued", lambda a: None, SendResult),
    Case("400_message", lambda a: a.respond_with(400, mailgun_error("'to' parameter is missing")),
         InvalidRequest, 400, reason="'to' parameter is missing"),
    Case("401_forbidden", lambda a: a.respond_with(401, b"Forbidden"), PermanentError, 401,
         reason="Forbidden"),
    Case("403", lambda a: a.script([403]), PermanentError, 403),
    Case("404_domain", lambda a: a.script([404]), PermanentError, 404),
    Case("413", lambda a: a.script([413]), InvalidRequest, 413),
    Case("429_retry_after", lambda a: a.throttle(9), RetryableError, 429, 9),
    Case("429_reset_now", lambda a: a.respond_with(429, headers={"X-RateLimit-Reset": "0"}),
         RetryableError, 429, 0),
    Case("500", lambda a: a.script([500]), RetryableError, 500),
    Case("502", lambda a: a.script([502]), RetryableError, 502),
    Case("connection_dropped", lambda a: a.drop_next(), RetryableError),
]  # fmt: skip


@cases(CASES)
def test_response_classification(case: Case, api: MailgunApi, make_delivery, run) -> None:
    case.arrange(api)
    outcome = run(attempt(connector_for(api), make_delivery()))
    check(case, outcome, len(api.received), retry_after_abs=1.5)
    if isinstance(outcome, SendResult):
        assert outcome.provider_message_id and outcome.provider_message_id.endswith(f"@{DOMAIN}>")


def test_request_form_auth_and_headers(api: MailgunApi, make_delivery, run) -> None:
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
    assert request.path == f"/v3/{DOMAIN}/messages"
    token = base64.b64encode(f"api:{API_KEY}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {token}"
    form = {name: values[0] for name, values in api.form(request).items()}
    assert form["from"] == f"Shop <shop@{DOMAIN}>"
    assert "alice@example.org" in form["to"]
    assert form["subject"] == "Grüße ✓"
    assert form["text"] == delivery.body
    assert form["html"] == "<p>Hallo</p>"
    assert form["h:List-Unsubscribe"].startswith("<https://example.org/u/abc>, <mailto:")
    assert form["h:List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert form["v:notification_id"] == delivery.notification_id
    assert form["v:tenant_id"] == "acme"


def test_transactional_has_no_unsubscribe(api: MailgunApi, make_delivery, run) -> None:
    assert isinstance(
        run(attempt(connector_for(api), make_delivery(category="transactional"))), SendResult
    )
    form = api.form(api.received[0])
    assert "h:List-Unsubscribe" not in form and "html" not in form


def test_stand_in_parses_multipart_too(api: MailgunApi) -> None:
    import urllib.request

    boundary = "xyzzy"
    parts = [("from", "a@mg.example.org"), ("to", "b@example.org"), ("text", "Hé")]
    body = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in parts
    )
    body += f"--{boundary}--\r\n"
    token = base64.b64encode(f"api:{API_KEY}".encode()).decode()
    request = urllib.request.Request(
        f"{api.base_url}/v3/{DOMAIN}/messages",
        data=body.encode(),
        headers={
            "Authorization": f"Basic {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    assert api.form(api.received[0])["text"] == ["Hé"]


def test_wrong_key_and_unknown_domain_are_permanent(api: MailgunApi, make_delivery, run) -> None:
    wrong_key = run(attempt(connector_for(api, key="key-wrong"), make_delivery()))
    wrong_domain = run(attempt(connector_for(api, domain="other.example"), make_delivery()))
    assert isinstance(wrong_key, PermanentError) and wrong_key.status == 401
    assert isinstance(wrong_domain, PermanentError) and wrong_domain.status == 404
    assert "Domain not found" in wrong_domain.reason
    assert api.count == 0


def test_invalid_address_fails_before_sending(api: MailgunApi, make_delivery, run) -> None:
    outcome = run(attempt(connector_for(api), make_delivery(address="nobody")))
    assert isinstance(outcome, InvalidRequest)
    assert api.received == []


def test_batch_sends_one_request_each(api: MailgunApi, make_delivery, run) -> None:
    connector = connector_for(api)
    deliveries = [make_delivery(address=f"u{i}@example.org") for i in range(20)]

    async def scenario() -> list:
        await connector.open()
        try:
            return await connector.send_batch(deliveries, concurrency=5)
        finally:
            await connector.close()

    outcomes = run(scenario())
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert api.wait_for(20, timeout=5)
    assert len({o.provider_message_id for o in outcomes}) == 20


def test_from_settings_and_validation() -> None:
    settings = Settings(
        mailgun_api_key="key-x", mailgun_domain="mg.x.org", mailgun_base_url="http://mg.local"
    )
    connector = MailgunConnector.from_settings(settings)
    assert connector.url == "http://mg.local/v3/mg.x.org/messages"
    with pytest.raises(ValueError):
        MailgunConnector("", "mg.x.org")
    with pytest.raises(ValueError):
        MailgunConnector("key-x", "")
    with pytest.raises(ValueError):
        MailgunConnector("key-x", "mg.x.org", max_connections=0)
