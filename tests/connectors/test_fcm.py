"""FcmConnector against the local FCM HTTP v1 API (notiflow.devservices.fcm_api)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.base import (
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
    TokenInvalid,
)
from connectors.push.fcm import FcmConnector, classify_fcm_error
from notiflow.devservices.fcm_api import FcmApi, StaticTokenCredentials, google_error
from notiflow.settings import Settings
from tests.connectors.harness import batch

TOKEN = "dXNlci0xOmRldmljZS10b2tlbg:APA91bHkJ1qL0a9"


@pytest.fixture
def fcm_api() -> Iterator[FcmApi]:
    with FcmApi(project_id="notiflow-test") as api:
        yield api


@pytest.fixture
def credential(fcm_api: FcmApi) -> StaticTokenCredentials:
    return fcm_api.credentials()


@pytest.fixture
def connector(fcm_api: FcmApi, credential: StaticTokenCredentials) -> FcmConnector:
    return FcmConnector("notiflow-test", credential, base_url=fcm_api.base_url, timeout=5)


@pytest.fixture
def push(make_delivery: Callable[..., Delivery]) -> Callable[..., Delivery]:
    def factory(**overrides: Any) -> Delivery:
        return make_delivery(**{"channel": "push", "address": f"fcm:{TOKEN}", **overrides})

    return factory


def test_send_posts_an_http_v1_message_with_the_oauth_token(run, fcm_api, connector, push):
    delivery = push(subject="Shipped", body="Order #42 left", data={"order": 42, "eta": "Tue"})
    [result] = run(batch(connector, delivery))
    assert isinstance(result, SendResult)
    assert result.provider_message_id.startswith("projects/notiflow-test/messages/0:")
    [request] = fcm_api.received
    assert request.path == "/v1/projects/notiflow-test/messages:send"
    assert request.headers["Authorization"] == f"Bearer {connector.credential.token}"
    assert request.headers["Content-Type"] == "application/json"
    message = request.json["message"]
    assert message["token"] == TOKEN
    assert message["notification"] == {"title": "Shipped", "body": "Order #42 left"}
    assert message["data"] == {"order": "42", "eta": "Tue"}  # FCM data is string → string
    assert message["android"] == {"priority": "normal"}
    assert message["apns"] == {"headers": {"apns-priority": "10"}}


def test_priority_ttl_collapse_and_background(run, fcm_api, connector, push):
    urgent = push(priority="critical", metadata={"ttl_s": "60", "collapse_key": "score"})
    silent = push(metadata={"push_type": "background"}, data={"sync": "1"})
    run(batch(connector, urgent, silent))
    first, second = sorted(fcm_api.messages, key=lambda m: "notification" in m, reverse=True)
    assert first["android"] == {"priority": "high", "ttl": "60s", "collapse_key": "score"}
    assert first["apns"]["headers"]["apns-collapse-id"] == "score"
    assert int(first["apns"]["headers"]["apns-expiration"]) >= int(time.time()) + 55
    assert "notification" not in second and second["apns"]["headers"]["apns-priority"] == "5"


def test_payload_checks_fail_before_any_request(run, fcm_api, connector, push):
    outcomes = run(
        batch(
            connector,
            push(data={"google.sent_time": "1"}),
            push(data={"from": "x"}),
            push(data={"blob": "x" * 5000}),
            push(address="fcm:"),
        )
    )
    assert all(isinstance(o, InvalidRequest) for o in outcomes), outcomes
    assert "payload_too_large" in outcomes[2].reason
    assert fcm_api.received == []


def test_the_token_is_cached_and_one_refresh_serves_concurrent_sends(
    run, fcm_api, connector, credential, push
):
    outcomes = run(batch(connector, *(push() for _ in range(20))))
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert credential.refresh_count == 1 and connector.token_refreshes == 1
    assert len({r.headers["Authorization"] for r in fcm_api.received}) == 1
    # renewed TOKEN_REFRESH_MARGIN_S before expiry, not at it
    remaining = connector._refresh_at - time.monotonic()
    assert 3600 - 300 - 60 < remaining <= 3600 - 300


def test_the_token_is_refreshed_before_it_expires(run, fcm_api, push):
    credential = fcm_api.credentials(lifetime_s=3.0)  # short-lived: renewed at half its life
    connector = FcmConnector("notiflow-test", credential, base_url=fcm_api.base_url)

    async def scenario() -> None:
        await connector.open()
        await connector.send(push())
        await connector.send(push())
        await asyncio.sleep(1.6)
        await connector.send(push())
        await connector.close()

    run(scenario())
    assert credential.refresh_count == 2
    assert len({r.headers["Authorization"] for r in fcm_api.received}) == 2


def test_a_refused_token_is_refreshed_once_within_the_attempt(run, fcm_api, connector, push):
    run(batch(connector, push()))
    fcm_api.revoke_tokens()
    [result] = run(batch(connector, push()))
    assert isinstance(result, SendResult)
    assert [r.status for r in fcm_api.received] == [200, 401, 200]
    assert connector.token_refreshes == 2


def test_a_token_refused_twice_is_permanent(run, fcm_api, push):
    credential = StaticTokenCredentials(lambda: "ya29.never-issued")
    connector = FcmConnector("notiflow-test", credential, base_url=fcm_api.base_url)
    [outcome] = run(batch(connector, push()))
    assert isinstance(outcome, PermanentError) and outcome.status == 401
    assert "UNAUTHENTICATED" in outcome.reason
    assert [r.status for r in fcm_api.received] == [401, 401]


ERROR_CASES = [
    # (FcmApi.fail error code, expected class, HTTP status)
    ("UNREGISTERED", TokenInvalid, 404),
    ("INVALID_ARGUMENT", InvalidRequest, 400),
    ("QUOTA_EXCEEDED", RetryableError, 429),
    ("UNAVAILABLE", RetryableError, 503),
    ("INTERNAL", RetryableError, 500),
    ("THIRD_PARTY_AUTH_ERROR", PermanentError, 401),
    ("SENDER_ID_MISMATCH", PermanentError, 403),
]


@pytest.mark.parametrize(("code", "expected", "status"), ERROR_CASES)
def test_fcm_error_codes_are_classified(run, fcm_api, connector, push, code, expected, status):
    fcm_api.fail(code)
    [outcome] = run(batch(connector, push()))
    assert type(outcome) is expected
    assert outcome.status == status and outcome.reason.startswith(code)
    assert len(fcm_api.received) == 1  # THIRD_PARTY_AUTH_ERROR does not refresh our token


def test_dead_and_malformed_tokens_are_token_invalid(run, fcm_api, connector, push):
    fcm_api.kill_token(TOKEN)
    dead, malformed = run(batch(connector, push(), push(address="fcm:not a token")))
    assert isinstance(dead, TokenInvalid) and dead.status == 404
    assert isinstance(malformed, TokenInvalid) and malformed.status == 400
    assert "not a valid FCM registration token" in malformed.reason


def test_retry_after_is_honoured(run, fcm_api, connector, push):
    fcm_api.throttle(7)
    fcm_api.fail("UNAVAILABLE", retry_after=2.5)
    throttled, unavailable = [run(batch(connector, push()))[0] for _ in range(2)]
    assert isinstance(throttled, RetryableError) and throttled.retry_after == 7
    assert isinstance(unavailable, RetryableError) and unavailable.retry_after == 2.5


def test_transport_failures_are_retryable(run, fcm_api, push, credential):
    fcm_api.drop_next()
    fast = FcmConnector("notiflow-test", credential, base_url=fcm_api.base_url, timeout=0.3)
    [dropped] = run(batch(fast, push()))
    fcm_api.delay_seconds = 1.0
    [slow] = run(batch(fast, push()))
    assert isinstance(dropped, RetryableError) and isinstance(slow, RetryableError)
    assert "timeout" in slow.reason


def test_a_wrong_base_url_is_permanent_not_a_dead_token(run, fcm_api, credential, push):
    wrong = FcmConnector("notiflow-test", credential, base_url=f"{fcm_api.base_url}/nope")
    [outcome] = run(batch(wrong, push()))
    assert type(outcome) is PermanentError and outcome.status == 404


def test_classification_of_400_bodies():
    field_violation = orjson.dumps(
        {
            "error": {
                "code": 400,
                "status": "INVALID_ARGUMENT",
                "message": "Invalid value at 'message.data[0].value'",
                "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest"}],
            }
        }
    )
    assert type(classify_fcm_error(400, field_violation, None)) is InvalidRequest
    bad_token = orjson.dumps(
        google_error(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            "INVALID_ARGUMENT",
        )
    )
    assert type(classify_fcm_error(400, bad_token, None)) is TokenInvalid
    assert type(classify_fcm_error(502, b"<html>bad gateway</html>", 3.0)) is RetryableError


def test_from_settings_uses_the_service_account_file(run, fcm_api, push, tmp_path: Path):
    path = fcm_api.write_service_account(tmp_path / "service-account.json")
    settings = Settings(fcm_credentials_file=path, fcm_base_url=fcm_api.base_url)
    connector = FcmConnector.from_settings(settings)
    assert connector.project_id == "notiflow-test"  # read from the file
    outcomes = run(batch(connector, push(), push()))
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert fcm_api.token_requests == 1  # google-auth's real JWT-bearer grant, cached


def test_from_settings_needs_credentials():
    with pytest.raises(ValueError, match="FCM_CREDENTIALS_FILE"):
        FcmConnector.from_settings(Settings(fcm_credentials_file=None))
