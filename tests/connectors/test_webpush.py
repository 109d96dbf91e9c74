"""WebPushConnector against the local push service, which decrypts what it receives."""

from __future__ import annotations

import time
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
from connectors.push.webpush import (
    WebPushConnector,
    b64url_decode,
    b64url_encode,
    decrypt,
    encrypt,
    load_vapid_key,
    public_key_bytes,
)
from notiflow.devservices.webpush_api import WebPushApi
from notiflow.settings import Settings
from tests.connectors.harness import batch

SUBJECT = "mailto:ops@notiflow.local"

# RFC 8291 Appendix A: the worked example of aes128gcm Web Push encryption.
RFC_PLAINTEXT = b"When I grow up, I want to be a watermelon"
RFC_AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_UA_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYW"
    "AmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgS"
    "xsj_Qulcy4a-fN"
)


def _key(b64: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64url_decode(b64), "big"), ec.SECP256R1())


@pytest.fixture
def webpush_api() -> Iterator[WebPushApi]:
    with WebPushApi() as api:
        yield api


@pytest.fixture
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def connector(vapid_key: ec.EllipticCurvePrivateKey) -> WebPushConnector:
    return WebPushConnector(vapid_key, SUBJECT, timeout=5)


@pytest.fixture
def push(
    make_delivery: Callable[..., Delivery], webpush_api: WebPushApi
) -> Callable[..., Delivery]:
    def factory(subscription: dict[str, Any] | None = None, **overrides: Any) -> Delivery:
        address = WebPushApi.address(subscription or webpush_api.subscribe())
        return make_delivery(**{"channel": "push", "address": address, **overrides})

    return factory


def test_encryption_matches_rfc_8291_appendix_a():
    body = encrypt(
        RFC_PLAINTEXT,
        b64url_decode(RFC_UA_PUBLIC),
        b64url_decode(RFC_AUTH),
        salt=b64url_decode(RFC_SALT),
        private_key=_key(RFC_AS_PRIVATE),
    )
    assert b64url_encode(body) == RFC_BODY
    assert decrypt(body, _key(RFC_UA_PRIVATE), b64url_decode(RFC_AUTH)) == RFC_PLAINTEXT


def test_every_message_gets_a_fresh_key_and_tampering_is_detected():
    ua = ec.generate_private_key(ec.SECP256R1())
    auth = b"0123456789abcdef"
    first, second = (encrypt(b"hi", public_key_bytes(ua.public_key()), auth) for _ in range(2))
    assert first[:86] != second[:86]  # salt and sender key differ
    assert decrypt(second, ua, auth) == b"hi"
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        decrypt(first[:-1] + bytes([first[-1] ^ 1]), ua, auth)


def test_the_push_service_decrypts_what_was_sent(run, webpush_api, connector, push):
    delivery = push(subject="Shipped", body="Order #42 left", data={"order": 42}, priority="high")
    [result] = run(batch(connector, delivery))
    assert isinstance(result, SendResult) and result.detail == {"status": 201}
    assert result.provider_message_id.startswith(f"{webpush_api.base_url}/m/")
    [message] = webpush_api.messages
    assert message.json == {
        "id": delivery.notification_id,
        "title": "Shipped",
        "body": "Order #42 left",
        "category": "orders",
        "data": {"order": 42},
    }
    assert message.ttl == 86_400 and message.urgency == "high"
    assert message.vapid_key == connector.vapid_public_key
    [request] = webpush_api.received
    assert request.headers["Content-Encoding"] == "aes128gcm"
    assert b"Order #42" not in request.body  # encrypted on the wire


def test_ttl_urgency_and_topic_come_from_the_delivery(run, webpush_api, connector, push):
    run(batch(connector, push(priority="low", metadata={"ttl_s": "30", "collapse_key": "score"})))
    [message] = webpush_api.messages
    assert (message.ttl, message.urgency, message.topic) == (30, "low", "score")


def test_the_vapid_jwt_is_cached_per_origin_and_renewed(run, webpush_api, vapid_key, push):
    now = [time.time()]
    connector = WebPushConnector(vapid_key, SUBJECT, clock=lambda: now[0])
    run(batch(connector, push(), push(), push()))
    now[0] += 11.5 * 3600  # past lifetime minus the renewal margin
    run(batch(connector, push()))
    headers = [r.headers["Authorization"] for r in webpush_api.received]
    assert len(set(headers[:3])) == 1 and headers[3] != headers[0]
    token = headers[0].split("t=")[1].split(",")[0]
    claims = jwt.decode(
        token, vapid_key.public_key(), algorithms=["ES256"], audience=webpush_api.base_url
    )
    assert claims["sub"] == SUBJECT and claims["exp"] <= time.time() + 24 * 3600
    assert headers[0].endswith(f"k={connector.vapid_public_key}")


def test_gone_unknown_and_malformed_subscriptions_are_token_invalid(
    run, webpush_api, connector, push
):
    gone = webpush_api.subscribe()
    webpush_api.unsubscribe(gone)
    unknown = {**webpush_api.subscribe(), "endpoint": f"{webpush_api.base_url}/push/nope"}
    malformed = {"endpoint": f"{webpush_api.base_url}/push/x", "keys": {"p256dh": "AAAA"}}
    outcomes = run(batch(connector, push(gone), push(unknown), push(malformed)))
    assert [type(o) for o in outcomes] == [TokenInvalid] * 3
    assert [o.status for o in outcomes] == [410, 404, None]
    assert len(webpush_api.received) == 2


def test_a_vapid_key_other_than_the_subscriptions_is_permanent(run, webpush_api, connector, push):
    other = b64url_encode(public_key_bytes(ec.generate_private_key(ec.SECP256R1()).public_key()))
    [outcome] = run(batch(connector, push(webpush_api.subscribe(application_server_key=other))))
    assert type(outcome) is PermanentError and outcome.status == 403
    mine = webpush_api.subscribe(application_server_key=connector.vapid_public_key)
    assert isinstance(run(batch(connector, push(mine)))[0], SendResult)


ERROR_CASES = [
    (429, RetryableError),
    (500, RetryableError),
    (503, RetryableError),
    (413, InvalidRequest),
    (400, PermanentError),
    (401, PermanentError),
    (403, PermanentError),
    (404, TokenInvalid),
    (410, TokenInvalid),
]


@pytest.mark.parametrize(("status", "expected"), ERROR_CASES)
def test_push_service_statuses_are_classified(run, webpush_api, connector, push, status, expected):
    webpush_api.script([status])
    [outcome] = run(batch(connector, push()))
    assert type(outcome) is expected and outcome.status == status


def test_retry_after_and_dropped_connections(run, webpush_api, connector, push):
    webpush_api.throttle(9)
    webpush_api.drop_next()
    throttled, dropped = (run(batch(connector, push()))[0] for _ in range(2))
    assert isinstance(throttled, RetryableError) and throttled.retry_after == 9
    assert isinstance(dropped, RetryableError)


def test_payload_limit_is_checked_before_sending(run, webpush_api, connector, push):
    [outcome] = run(batch(connector, push(data={"blob": "x" * 4000})))
    assert type(outcome) is InvalidRequest and "payload_too_large" in outcome.reason
    assert webpush_api.received == []


def test_vapid_keys_load_from_every_documented_form(tmp_path: Path, vapid_key):
    raw = vapid_key.private_numbers().private_value.to_bytes(32, "big")
    pem = vapid_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = vapid_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "vapid.pem").write_bytes(pem)
    forms = [b64url_encode(raw), pem.decode(), str(tmp_path / "vapid.pem"), b64url_encode(der)]
    expected = vapid_key.private_numbers().private_value
    for form in forms:
        assert load_vapid_key(form).private_numbers().private_value == expected
    with pytest.raises(ValueError):
        load_vapid_key("not a key!")


def test_from_settings(run, webpush_api, vapid_key, push):
    raw = b64url_encode(vapid_key.private_numbers().private_value.to_bytes(32, "big"))
    connector = WebPushConnector.from_settings(Settings(webpush_vapid_private_key=raw))
    assert connector.vapid_subject == Settings.model_fields["webpush_vapid_subject"].default
    assert isinstance(run(batch(connector, push()))[0], SendResult)
    with pytest.raises(ValueError, match="VAPID"):
        WebPushConnector.from_settings(Settings(webpush_vapid_private_key=None))
