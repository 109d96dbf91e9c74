"""The FCM, APNs and Web Push stand-ins, driven with plain clients (no notiflow connector)."""

from __future__ import annotations

import time

import google.auth.transport.requests
import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.oauth2 import service_account

from connectors.push.webpush import b64url_decode, b64url_encode, encrypt, public_key_bytes
from notiflow.devservices.apns_api import ApnsApi
from notiflow.devservices.fcm_api import FCM_ERROR_TYPE, FcmApi
from notiflow.devservices.webpush_api import WebPushApi
from tests.devservices.helpers import port_is_open

DEVICE = "c3" * 32
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


# --- FcmApi -------------------------------------------------------------------------------------
def fcm_send(api: FcmApi, token: str | None, message: dict, project: str = "p1") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{api.base_url}/v1/projects/{project}/messages:send"
    return httpx.post(url, json={"message": message}, headers=headers, timeout=5)


def test_fcm_api_answers_like_fcm_and_stops() -> None:
    with FcmApi(project_id="p1", access_tokens={"static"}) as api:
        ok = fcm_send(api, "static", {"token": "device-token-000001", "data": {"k": "v"}})
        assert ok.status_code == 200
        assert ok.json()["name"].startswith("projects/p1/messages/0:")
        assert api.wait_for(1, timeout=1) and api.count == 1
        assert api.messages == [{"token": "device-token-000001", "data": {"k": "v"}}]

        unauth = fcm_send(api, None, {"token": "device-token-000001"})
        assert unauth.status_code == 401 and unauth.json()["error"]["status"] == "UNAUTHENTICATED"
        assert fcm_send(api, "static", {"token": "device-token-000001"}, "p2").status_code == 403
        numbers = fcm_send(api, "static", {"token": "device-token-000001", "data": {"n": 1}})
        assert numbers.status_code == 400

        api.kill_token("device-token-000001")
        dead = fcm_send(api, "static", {"token": "device-token-000001"}).json()["error"]
        assert dead["code"] == 404 and dead["status"] == "NOT_FOUND"
        assert dead["details"] == [{"@type": FCM_ERROR_TYPE, "errorCode": "UNREGISTERED"}]

        api.fail("QUOTA_EXCEEDED", retry_after=3)
        throttled = fcm_send(api, "static", {"token": "device-token-000002"})
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
        assert throttled.json()["error"]["details"][0]["errorCode"] == "QUOTA_EXCEEDED"
        port = api.port
    assert not port_is_open(port)


def test_fcm_api_token_endpoint_serves_google_auth_service_accounts() -> None:
    with FcmApi(project_id="p1") as api:
        info = api.service_account_info()
        credential = service_account.Credentials.from_service_account_info(info, scopes=[FCM_SCOPE])
        credential.refresh(google.auth.transport.requests.Request())
        assert credential.token and api.token_requests == 1
        assert fcm_send(api, credential.token, {"token": "device-token-000001"}).status_code == 200
        api.revoke_tokens()
        assert fcm_send(api, credential.token, {"token": "device-token-000001"}).status_code == 401
        forged = {**info, "private_key": FcmApi().service_account_info()["private_key"]}
        stranger = service_account.Credentials.from_service_account_info(forged, scopes=[FCM_SCOPE])
        with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
            stranger.refresh(google.auth.transport.requests.Request())


# --- ApnsApi ------------------------------------------------------------------------------------
def apns_token(key: ec.EllipticCurvePrivateKey, iat: float, kid: str = "KEY0000001") -> str:
    return jwt.encode({"iss": "TEAM000001", "iat": int(iat)}, key, "ES256", {"kid": kid})


def test_apns_api_speaks_http2_and_checks_jwt_and_headers() -> None:
    with ApnsApi(team_id="TEAM000001", topic="app.id") as api:
        key = serialization.load_pem_private_key(api.generate_key("KEY0000001"), None)
        token = apns_token(key, time.time())
        base = {"apns-topic": "app.id", "apns-push-type": "alert"}
        with httpx.Client(http2=True, verify=api.ssl_context(), timeout=5) as client:

            def post(path: str, body: bytes, **headers: str) -> httpx.Response:
                return client.post(f"{api.base_url}{path}", content=body, headers=headers)

            body = b'{"aps":{"alert":"hi"}}'
            ok = post(f"/3/device/{DEVICE}", body, **base, authorization=f"bearer {token}")
            assert ok.http_version == "HTTP/2" and ok.status_code == 200
            assert len(ok.headers["apns-id"]) == 36 and ok.content == b""
            assert api.wait_for(1, timeout=1) and api.received[0].json == {"aps": {"alert": "hi"}}

            def reason(path: str, body: bytes, jwt_token: str | None, **extra: str) -> tuple:
                headers = {**base, **extra}
                if jwt_token:
                    headers["authorization"] = f"bearer {jwt_token}"
                response = post(path, body, **{k: v for k, v in headers.items() if v})
                return response.status_code, response.json()["reason"]

            device = f"/3/device/{DEVICE}"
            forged = apns_token(ec.generate_private_key(ec.SECP256R1()), time.time())
            old = apns_token(key, time.time() - 3700)
            soon = apns_token(key, time.time() + 60)  # renewed a minute after the last one
            big = b'{"aps":{"alert":"' + b"x" * 4100 + b'"}}'
            assert reason(device, body, None) == (403, "MissingProviderToken")
            assert reason(device, body, forged) == (403, "InvalidProviderToken")
            assert reason(device, body, old) == (403, "ExpiredProviderToken")
            assert reason(device, body, soon) == (429, "TooManyProviderTokenUpdates")
            assert reason(device, body, token, **{"apns-topic": ""}) == (400, "MissingTopic")
            assert reason("/3/device/12ab", body, token) == (400, "BadDeviceToken")
            assert reason(device, body, token, **{"apns-priority": "7"}) == (400, "BadPriority")
            assert reason(device, big, token) == (413, "PayloadTooLarge")
            api.kill_token(DEVICE, since_ms=123)
            gone = post(device, body, **base, authorization=f"bearer {token}")
            assert gone.status_code == 410
            assert gone.json() == {"reason": "Unregistered", "timestamp": 123}
        assert api.count == 1 and api.connections == 1
        port = api.port
    assert not port_is_open(port)


def test_apns_api_goaway_ends_in_flight_requests() -> None:
    with ApnsApi(topic="app.id") as api:
        key = serialization.load_pem_private_key(api.generate_key(), None)
        headers = {
            "apns-topic": "app.id",
            "authorization": f"bearer {apns_token(key, time.time())}",
        }
        url = f"{api.base_url}/3/device/{DEVICE}"
        with httpx.Client(http2=True, verify=api.ssl_context(), timeout=5) as client:
            api.goaway_next()
            with pytest.raises(httpx.RemoteProtocolError, match="ConnectionTerminated"):
                client.post(url, content=b"{}", headers=headers)
            assert client.post(url, content=b"{}", headers=headers).status_code == 200
        assert api.connections == 2


# --- WebPushApi ---------------------------------------------------------------------------------
def test_webpush_api_verifies_vapid_and_decrypts() -> None:
    vapid = ec.generate_private_key(ec.SECP256R1())
    vapid_public = b64url_encode(public_key_bytes(vapid.public_key()))
    with WebPushApi() as api:
        subscription = api.subscribe(application_server_key=vapid_public)
        keys = {name: b64url_decode(value) for name, value in subscription["keys"].items()}
        assert len(keys["p256dh"]) == 65 and len(keys["auth"]) == 16
        claims = {"aud": api.base_url, "exp": int(time.time()) + 3600, "sub": "mailto:a@b.c"}
        authorization = f"vapid t={jwt.encode(claims, vapid, 'ES256')}, k={vapid_public}"
        body = encrypt(b'{"hello": "browser"}', keys["p256dh"], keys["auth"])
        headers = {"TTL": "60", "Content-Encoding": "aes128gcm", "Authorization": authorization}
        endpoint = subscription["endpoint"]

        accepted = httpx.post(endpoint, content=body, headers=headers, timeout=5)
        assert accepted.status_code == 201 and accepted.headers["Location"]
        [message] = api.messages
        assert message.json == {"hello": "browser"} and message.ttl == 60

        def status(**changes: str) -> int:
            sent = {k: v for k, v in {**headers, **changes}.items() if v}
            return httpx.post(endpoint, content=body, headers=sent, timeout=5).status_code

        assert status(TTL="") == 400
        assert status(**{"Content-Encoding": "aesgcm"}) == 400
        assert status(Authorization=authorization.replace("t=", "t=x")) == 401
        late = jwt.encode({**claims, "exp": int(time.time()) + 2 * 86400}, vapid, "ES256")
        assert status(Authorization=f"vapid t={late}, k={vapid_public}") == 401
        assert httpx.post(endpoint, content=b"\x00" * 5000, headers=headers).status_code == 413
        assert httpx.post(endpoint, content=body[:-1] + b"!", headers=headers).status_code == 400
        api.unsubscribe(subscription)
        assert status() == 410
        assert (
            orjson.loads(WebPushApi.address(subscription).removeprefix("webpush:")) == subscription
        )
