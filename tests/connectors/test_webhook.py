"""WebhookConnector against a real local HTTP server (aiohttp via WebhookReceiver)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import time
from collections.abc import Callable

import pytest

from connectors.base import (
    ConnectorError,
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.webhook.standard import WebhookConnector, parse_retry_after, sign, verify
from notiflow.devservices import WebhookReceiver, free_port
from notiflow.settings import Settings
from tests.connectors.harness import Case, attempt, cases, check


def hook_delivery(make_delivery: Callable[..., Delivery], url: str, **overrides) -> Delivery:
    return make_delivery(channel="webhook", address=url, **overrides)


# --- one case table: what the endpoint answers → how the connector classifies it ----------
RETRY_30 = {"Retry-After": "30"}
MOVED = {"Location": "/elsewhere"}
CASES = [
    Case("200", lambda r: None, SendResult),
    Case("201", lambda r: r.respond_with(201, {"id": "x"}), SendResult),
    Case("204", lambda r: r.respond_with(204, b""), SendResult),
    Case("500", lambda r: r.script([500]), RetryableError, 500),
    Case("502", lambda r: r.script([502]), RetryableError, 502),
    Case("503_later", lambda r: r.respond_with(503, headers=RETRY_30), RetryableError, 503, 30),
    Case("408", lambda r: r.script([408]), RetryableError, 408),
    Case("425", lambda r: r.script([425]), RetryableError, 425),
    Case("429_seconds", lambda r: r.throttle(7), RetryableError, 429, 7),
    Case("400", lambda r: r.respond_with(400, {"error": "bad payload"}), PermanentError, 400,
         reason="bad payload"),  # a short excerpt of the body
    Case("401", lambda r: r.script([401]), PermanentError, 401),
    Case("404", lambda r: r.script([404]), PermanentError, 404),
    Case("410", lambda r: r.script([410]), PermanentError, 410),
    Case("301_not_followed", lambda r: r.respond_with(301, headers=MOVED), PermanentError, 301),
    Case("connection_dropped", lambda r: r.drop_next(), RetryableError),
]  # fmt: skip


@cases(CASES)
def test_response_classification(
    case: Case, webhook_receiver: WebhookReceiver, webhook_secret: str, make_delivery, run
) -> None:
    case.arrange(webhook_receiver)
    connector = WebhookConnector(webhook_secret, timeout=5)
    outcome = run(attempt(connector, hook_delivery(make_delivery, webhook_receiver.url())))
    check(case, outcome, len(webhook_receiver.received))
    if isinstance(outcome, ConnectorError) and case.status is not None:
        assert f"http_{case.status}" in outcome.reason


def test_body_and_signature(
    webhook_receiver: WebhookReceiver, webhook_secret: str, make_delivery, run
) -> None:
    delivery = hook_delivery(
        make_delivery,
        webhook_receiver.url("/hooks/acme"),
        data={"order": 42, "items": ["a", "b"]},
        metadata={"trace_id": "t-1"},
    )
    result = run(attempt(WebhookConnector(webhook_secret), delivery))
    assert isinstance(result, SendResult)
    assert webhook_receiver.wait_for(1, timeout=5)
    request = webhook_receiver.received[0]
    assert (request.method, request.path, request.status) == ("POST", "/hooks/acme", 200)
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "type": "notification",
        "id": delivery.notification_id,
        "tenant_id": "acme",
        "user_id": delivery.user_id,
        "category": "orders",
        "subject": delivery.subject,
        "body": delivery.body,
        "data": {"order": 42, "items": ["a", "b"]},
        "metadata": {"trace_id": "t-1"},
    }
    assert request.signature_valid is True
    # Independent check of the Standard Webhooks scheme, without the module's own helpers.
    msg_id, timestamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    key = base64.b64decode(webhook_secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
    assert abs(int(timestamp) - time.time()) < 60
    assert result.provider_message_id == msg_id == f"{delivery.notification_id}.webhook"


def test_webhook_id_is_stable_across_retries(
    webhook_receiver: WebhookReceiver, webhook_secret: str, make_delivery, run
) -> None:
    webhook_receiver.script([500, 503, 200])
    delivery = hook_delivery(make_delivery, webhook_receiver.url())
    outcomes = [run(attempt(WebhookConnector(webhook_secret), delivery)) for _ in range(3)]
    assert [type(o) for o in outcomes] == [RetryableError, RetryableError, SendResult]
    assert [r.status for r in webhook_receiver.received] == [500, 503, 200]
    assert len({r.headers["webhook-id"] for r in webhook_receiver.received}) == 1
    assert all(r.signature_valid for r in webhook_receiver.received)
    assert webhook_receiver.count == 1


def test_retry_after_http_date(
    webhook_receiver: WebhookReceiver, webhook_secret: str, make_delivery, run
) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    webhook_receiver.respond_with(
        429, headers={"Retry-After": email.utils.format_datetime(when, usegmt=True)}
    )
    outcome = run(
        attempt(
            WebhookConnector(webhook_secret), hook_delivery(make_delivery, webhook_receiver.url())
        )
    )
    assert isinstance(outcome, RetryableError) and outcome.status == 429
    assert outcome.retry_after is not None and 100 < outcome.retry_after <= 120


def test_status_for_path(
    webhook_receiver: WebhookReceiver, webhook_secret: str, make_delivery, run
) -> None:
    webhook_receiver.status_for_path("/gone", 410)
    gone = run(
        attempt(
            WebhookConnector(webhook_secret),
            hook_delivery(make_delivery, webhook_receiver.url("/gone")),
        )
    )
    fine = run(
        attempt(
            WebhookConnector(webhook_secret),
            hook_delivery(make_delivery, webhook_receiver.url("/ok")),
        )
    )
    assert isinstance(gone, PermanentError) and gone.status == 410
    assert isinstance(fine, SendResult)


def test_timeout_is_retryable(
    webhook_receiver: WebhookReceiver, webhook_secret: str, make_delivery, run
) -> None:
    webhook_receiver.delay_seconds = 2.0
    started = time.monotonic()
    outcome = run(
        attempt(
            WebhookConnector(webhook_secret, timeout=0.3),
            hook_delivery(make_delivery, webhook_receiver.url()),
        )
    )
    assert isinstance(outcome, RetryableError)
    assert "timeout" in outcome.reason
    assert time.monotonic() - started < 1.5  # gave up at the connector timeout, not the server


def test_connection_refused_is_retryable(webhook_secret: str, make_delivery, run) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    outcome = run(
        attempt(WebhookConnector(webhook_secret, timeout=2), hook_delivery(make_delivery, url))
    )
    assert isinstance(outcome, RetryableError)
    assert "connect_error" in outcome.reason


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
    ],
    ids=["bad_status", "not_http", "truncated_body"],
)
def test_malformed_responses_are_retryable(
    reply: bytes, webhook_secret: str, make_delivery, run
) -> None:
    async def scenario() -> SendResult | ConnectorError:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            connector = WebhookConnector(webhook_secret, timeout=2)
            return await attempt(
                connector, hook_delivery(make_delivery, f"http://127.0.0.1:{port}/")
            )

    outcome = run(scenario())
    assert isinstance(outcome, RetryableError), outcome


@pytest.mark.parametrize("url", ["ftp://example.org/x", "not a url", "http:///no-host"])
def test_invalid_urls_are_invalid_requests(
    url: str, webhook_secret: str, make_delivery, run
) -> None:
    outcome = run(attempt(WebhookConnector(webhook_secret), hook_delivery(make_delivery, url)))
    assert isinstance(outcome, InvalidRequest)


def test_unserializable_payload_is_invalid(
    webhook_receiver: WebhookReceiver, webhook_secret: str, make_delivery, run
) -> None:
    delivery = hook_delivery(make_delivery, webhook_receiver.url(), data={"when": object()})
    outcome = run(attempt(WebhookConnector(webhook_secret), delivery))
    assert isinstance(outcome, InvalidRequest)
    assert webhook_receiver.received == []


def test_shared_session_reuses_connections(
    webhook_receiver: WebhookReceiver, webhook_secret: str, make_delivery, run
) -> None:
    connector = WebhookConnector(webhook_secret, max_connections=10)
    deliveries = [hook_delivery(make_delivery, webhook_receiver.url()) for _ in range(300)]

    async def scenario() -> list:
        await connector.open()
        try:
            return await connector.send_batch(deliveries, concurrency=50)
        finally:
            await connector.close()

    outcomes = run(scenario())
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert webhook_receiver.wait_for(300, timeout=10)
    assert len({r.peer for r in webhook_receiver.received}) <= 10
    assert {r.json["id"] for r in webhook_receiver.received} == {
        d.notification_id for d in deliveries
    }


# --- sign / verify / Retry-After as plain functions --------------------------------------------
def test_sign_matches_the_standard_webhooks_reference_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {
        "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "Webhook-Timestamp": "1614265330",
        "Webhook-Signature": f"v1,b3RoZXI= {signature}",  # rotation: any listed signature
    }
    assert verify(secret, headers, body, now=1614265330 + 10)
    assert not verify(secret, headers, body + " ", now=1614265330)  # tampered body
    assert not verify(secret, headers, body, now=1614265330 + 301)  # too old
    assert not verify(secret, headers, body, now=1614265330 - 301)  # from the future
    assert not verify("whsec_" + base64.b64encode(b"other").decode(), headers, body, now=1614265330)
    assert not verify(secret, {k: v for k, v in headers.items() if k != "Webhook-Id"}, body)


def test_parse_retry_after() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:00 GMT", now=now) == 60
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_from_settings_and_validation() -> None:
    settings = Settings(webhook_timeout_seconds=3.5, delivery_concurrency=20)
    connector = WebhookConnector.from_settings(settings)
    assert (connector.timeout, connector.max_connections) == (3.5, 20)
    assert connector.secret == settings.webhook_secret
    with pytest.raises(ValueError):
        WebhookConnector("whsec_not base64!")
