"""ApnsConnector against the local APNs API (real HTTP/2 + TLS, notiflow.devservices.apns_api)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.base import (
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
    TokenInvalid,
)
from connectors.push.apns import ApnsConnector
from notiflow.devservices.apns_api import ApnsApi
from notiflow.settings import Settings
from tests.connectors.harness import batch

DEVICE = "a1" * 32
KEY_ID = "KEY0000001"


class FakeClock:
    """The connector's wall clock, settable (the server keeps real time)."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset = offset_s

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def apns_api() -> Iterator[ApnsApi]:
    with ApnsApi(team_id="TEAM000001", topic="org.notiflow.app") as api:
        yield api


@pytest.fixture
def key_pem(apns_api: ApnsApi) -> bytes:
    return apns_api.generate_key(KEY_ID)


@pytest.fixture
def make_connector(apns_api: ApnsApi, key_pem: bytes) -> Callable[..., ApnsConnector]:
    def factory(**options: Any) -> ApnsConnector:
        options = {"base_url": apns_api.base_url, "verify": apns_api.ca_file, **options}
        key = options.pop("key", key_pem)
        return ApnsConnector(key, KEY_ID, "TEAM000001", "org.notiflow.app", **options)

    return factory


@pytest.fixture
def push(make_delivery: Callable[..., Delivery]) -> Callable[..., Delivery]:
    def factory(**overrides: Any) -> Delivery:
        return make_delivery(**{"channel": "push", "address": f"apns:{DEVICE}", **overrides})

    return factory


def test_send_over_http2_with_apns_headers_and_jwt(run, apns_api, make_connector, key_pem, push):
    delivery = push(subject="Shipped", body="Order #42 left", data={"order": 42})
    [result] = run(batch(make_connector(), delivery))
    assert isinstance(result, SendResult)
    [request] = apns_api.received
    headers = request.headers
    assert headers[":method"] == "POST" and headers[":scheme"] == "https"  # HTTP/2 pseudo-headers
    assert request.path == f"/3/device/{DEVICE}"
    assert headers["apns-topic"] == "org.notiflow.app"
    assert headers["apns-push-type"] == "alert" and headers["apns-priority"] == "10"
    assert abs(int(headers["apns-expiration"]) - (time.time() + 86_400)) < 5
    assert result.provider_message_id == headers["apns-id"] == str(uuid.UUID(headers["apns-id"]))
    assert request.json == {
        "order": 42,
        "aps": {"alert": {"title": "Shipped", "body": "Order #42 left"}},
    }
    scheme, token = headers["authorization"].split(" ")
    public = serialization.load_pem_private_key(key_pem, None).public_key()
    claims = jwt.decode(token, public, algorithms=["ES256"])
    assert scheme == "bearer" and jwt.get_unverified_header(token)["kid"] == KEY_ID
    assert claims["iss"] == "TEAM000001" and abs(claims["iat"] - time.time()) < 5


def test_background_and_low_priority_pushes(run, apns_api, make_connector, push):
    silent = push(metadata={"push_type": "background", "collapse_key": "sync"})
    run(batch(make_connector(), silent, push(priority="low", metadata={"ttl_s": "0"})))
    by_type = {r.headers["apns-push-type"]: r for r in apns_api.received}
    assert by_type["background"].json == {"aps": {"content-available": 1}}
    assert by_type["background"].headers["apns-priority"] == "5"
    assert by_type["background"].headers["apns-collapse-id"] == "sync"
    assert by_type["alert"].headers["apns-priority"] == "5"
    assert by_type["alert"].headers["apns-expiration"] == "0"


def test_one_connection_and_one_token_serve_many_sends(run, apns_api, make_connector, push):
    connector = make_connector()
    outcomes = run(batch(connector, *(push() for _ in range(30)), concurrency=10))
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert apns_api.connections == 1
    assert connector.tokens_minted == 1
    assert len({r.headers["authorization"] for r in apns_api.received}) == 1


def test_the_token_is_renewed_after_50_minutes(run, apns_api, make_connector, push):
    clock = FakeClock(offset_s=-45 * 60)  # the first token is 45 minutes old by server time
    connector = make_connector(clock=clock)

    async def scenario() -> None:
        await connector.open()
        await connector.send(push())
        clock.advance(49 * 60)
        await connector.send(push())  # 49 min: still the cached token
        clock.advance(2 * 60)
        await connector.send(push())  # 51 min: renewed
        await connector.close()

    run(scenario())
    assert connector.tokens_minted == 2
    assert [r.status for r in apns_api.received] == [200, 200, 200]
    tokens = [r.headers["authorization"] for r in apns_api.received]
    assert tokens[0] == tokens[1] != tokens[2]


def test_expired_provider_token_is_renewed_and_retried_once(run, apns_api, make_connector, push):
    clock = FakeClock(offset_s=-25 * 60)
    connector = make_connector(clock=clock)

    async def scenario() -> Any:
        await connector.open()
        await connector.send(push())
        clock.advance(24 * 60)
        apns_api.expire_provider_tokens()
        result = await connector.send(push())
        await connector.close()
        return result

    assert isinstance(run(scenario()), SendResult)
    assert [(r.status, r.reason) for r in apns_api.received] == [
        (200, None),
        (403, "ExpiredProviderToken"),
        (200, None),
    ]
    assert connector.tokens_minted == 2


def test_a_young_token_refused_as_expired_is_permanent(run, apns_api, make_connector, push):
    clock = FakeClock(offset_s=-2 * 3600)  # our clock is two hours slow
    connector = make_connector(clock=clock)
    [outcome] = run(batch(connector, push()))
    assert type(outcome) is PermanentError and "check the clock" in outcome.reason
    assert connector.tokens_minted == 1  # never renewed more than once per 20 minutes
    assert [r.reason for r in apns_api.received] == ["ExpiredProviderToken"]


def test_dead_and_bad_device_tokens_are_token_invalid(run, apns_api, make_connector, push):
    apns_api.kill_token(DEVICE, since_ms=1_700_000_000_000)
    dead, short, not_hex = run(
        batch(make_connector(), push(), push(address="apns:abcd"), push(address="apns:xyz"))
    )
    assert isinstance(dead, TokenInvalid) and dead.status == 410
    assert dead.reason == "Unregistered (since 1700000000000)"
    assert isinstance(short, TokenInvalid) and short.reason == "BadDeviceToken"
    assert isinstance(not_hex, TokenInvalid) and not_hex.status is None  # caught before sending
    assert len(apns_api.received) == 2


ERROR_CASES = [
    # (status, reason, expected class)
    (429, "TooManyRequests", RetryableError),
    (500, "InternalServerError", RetryableError),
    (503, "ServiceUnavailable", RetryableError),
    (413, "PayloadTooLarge", InvalidRequest),
    (400, "BadDeviceToken", TokenInvalid),
    (410, "Unregistered", TokenInvalid),
    (400, "BadPriority", InvalidRequest),
    (403, "InvalidProviderToken", PermanentError),
    (403, "BadCertificate", PermanentError),
]


@pytest.mark.parametrize(("status", "reason", "expected"), ERROR_CASES)
def test_apns_errors_are_classified(run, apns_api, make_connector, push, status, reason, expected):
    apns_api.respond_with(status, reason)
    [outcome] = run(batch(make_connector(), push()))
    assert type(outcome) is expected and outcome.status == status and reason in outcome.reason


def test_retry_after_is_honoured(run, apns_api, make_connector, push):
    apns_api.throttle(12)
    [outcome] = run(batch(make_connector(), push()))
    assert isinstance(outcome, RetryableError) and outcome.retry_after == 12


def test_untrusted_key_and_wrong_topic(run, apns_api, make_connector, key_pem, push):
    stranger_key = ec.generate_private_key(ec.SECP256R1())  # not trusted by the server
    stranger = make_connector(key=stranger_key)
    other_app = ApnsConnector(
        key_pem,
        KEY_ID,
        "TEAM000001",
        "org.other",
        base_url=apns_api.base_url,
        verify=apns_api.ca_file,
    )
    [refused] = run(batch(stranger, push()))
    [topic_error] = run(batch(other_app, push()))
    assert type(refused) is PermanentError and refused.reason == "InvalidProviderToken"
    assert type(topic_error) is InvalidRequest and topic_error.reason == "TopicDisallowed"


def test_payload_limit_is_checked_before_sending(run, apns_api, make_connector, push):
    [outcome] = run(batch(make_connector(), push(data={"blob": "x" * 4100})))
    assert type(outcome) is InvalidRequest and "payload_too_large" in outcome.reason
    assert apns_api.received == []


def test_goaway_and_dropped_connections_are_retryable(run, apns_api, make_connector, push):
    connector = make_connector()

    async def scenario() -> list[Any]:
        await connector.open()
        outcomes = []
        for fault in (apns_api.goaway_next, apns_api.drop_next, None):
            if fault is not None:
                fault()
            try:
                outcomes.append(await connector.send(push()))
            except RetryableError as error:
                outcomes.append(error)
        await connector.close()
        return outcomes

    goaway, dropped, after = run(scenario())
    assert isinstance(goaway, RetryableError) and "ConnectionTerminated" in goaway.reason
    assert goaway.reason.startswith("connection_terminated")
    assert isinstance(dropped, RetryableError)
    assert isinstance(after, SendResult)  # a fresh connection
    assert apns_api.connections == 3


def test_graceful_goaway_after_n_requests_opens_new_connections(
    run, apns_api, make_connector, push
):
    apns_api.max_requests_per_connection = 4
    outcomes = run(batch(make_connector(), *(push() for _ in range(10)), concurrency=1))
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert apns_api.connections == 3


def test_timeouts_are_retryable(run, apns_api, make_connector, push):
    apns_api.delay_seconds = 1.0
    [outcome] = run(batch(make_connector(timeout=0.3), push()))
    assert isinstance(outcome, RetryableError) and "timeout" in outcome.reason


def test_from_settings(run, apns_api, key_pem, push, tmp_path: Path):
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(key_pem)
    settings = Settings(
        apns_key_file=key_file,
        apns_key_id=KEY_ID,
        apns_team_id="TEAM000001",
        apns_topic="org.notiflow.app",
        apns_base_url=apns_api.base_url,
        apns_validate_certs=False,  # the stand-in's certificate is self-signed
    )
    [outcome] = run(batch(ApnsConnector.from_settings(settings), push()))
    assert isinstance(outcome, SendResult)
    with pytest.raises(ValueError, match="apns_key_id"):
        ApnsConnector.from_settings(Settings(apns_key_file=key_file, apns_key_id=None))
