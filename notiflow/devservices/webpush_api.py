"""A local Web Push service (RFC 8030): the stand-in for FCM/Mozilla/Apple push endpoints.

``subscribe()`` plays the browser: it makes a P-256 key pair and auth secret and returns the
subscription JSON (``endpoint`` on this server, ``keys.p256dh``, ``keys.auth``). ``POST
/push/{id}`` then checks what a push service checks — the VAPID JWT (RFC 8292: signature with
the ``k`` key, ``aud`` = this origin, ``exp`` within 24 hours, ``sub``; 401 otherwise, 403 if
``k`` is not the key the subscription was made with), ``TTL``, ``Content-Encoding: aes128gcm``,
the 4096-byte limit (413) — and decrypts the body with the subscription's private key (RFC
8291), recording the plaintext: tests see what the browser would, proving the encryption end to
end. 201 Created with a ``Location``; 404 for unknown and 410 for unsubscribed endpoints.

It is a ``WebhookReceiver`` (lifecycle, recording, fault injection: ``script``,
``respond_with``, ``throttle``, ``drop_next``); a scripted 2xx means "answer normally".
"""

from __future__ import annotations

import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.push.webpush import b64url_decode, b64url_encode, decrypt, public_key_bytes
from notiflow.devservices.webhook_receiver import Reply, WebhookReceiver

__all__ = ["PushMessage", "WebPushApi", "verify_vapid"]


def verify_vapid(authorization: str, audience: str, *, now: float | None = None) -> str:
    """The ``k`` public key (base64url) of a valid ``vapid t=..., k=...`` header.

    Raises ``jwt.InvalidTokenError`` when the header, signature, ``aud``, ``exp`` (at most 24
    hours ahead) or ``sub`` is wrong.
    """
    scheme, _, params = authorization.partition(" ")
    fields = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
    if scheme.lower() != "vapid" or "t" not in fields or "k" not in fields:
        raise jwt.InvalidTokenError("not a 'vapid t=..., k=...' header")
    try:
        point = b64url_decode(fields["k"])
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except (binascii.Error, ValueError) as error:
        raise jwt.InvalidTokenError(f"bad VAPID public key: {error}") from error
    claims = jwt.decode(
        fields["t"],
        key,
        algorithms=["ES256"],
        audience=audience,
        options={"require": ["exp", "aud", "sub"]},
    )
    if claims["exp"] > (now or time.time()) + 24 * 3600:
        raise jwt.InvalidTokenError("exp more than 24 hours ahead")
    if not str(claims["sub"]).startswith(("mailto:", "https:")):
        raise jwt.InvalidTokenError("sub must be a mailto: or https: URI")
    return fields["k"]


@dataclass(frozen=True)
class PushMessage:
    """A push message as the browser would get it, with the delivery headers."""

    subscription_id: str
    plaintext: bytes
    ttl: int
    urgency: str | None
    topic: str | None
    vapid_key: str
    received_at: float = field(default_factory=time.time)

    @property
    def json(self) -> Any:
        try:
            return orjson.loads(self.plaintext)
        except orjson.JSONDecodeError:
            return None


@dataclass(frozen=True, slots=True)
class _Subscription:
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: str | None


class WebPushApi(WebhookReceiver):
    """A push service on a loopback port; endpoints are ``{base_url}/push/{id}``."""

    NAME = "webpush-api"
    MAX_BODY_BYTES = 4096
    PUSH_PREFIX = "/push/"
    SCRIPTED_SUCCESS_IS_NORMAL = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, delay_seconds: float = 0.0):
        super().__init__(host, port, delay_seconds=delay_seconds)
        self._lock = threading.Lock()
        self._subscriptions: dict[str, _Subscription] = {}
        self._gone: set[str] = set()
        self._messages: list[PushMessage] = []
        self._verified: dict[str, tuple[str, float]] = {}  # Authorization → (k, exp)

    # --- the browser's side ----------------------------------------------------------------
    def subscribe(self, application_server_key: str | None = None) -> dict[str, Any]:
        """A fresh subscription (JSON-ready); with a key, only that VAPID key may push to it."""
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        sub_id = secrets.token_urlsafe(16)
        with self._lock:
            self._subscriptions[sub_id] = _Subscription(key, auth, application_server_key)
        return {
            "endpoint": f"{self.base_url}{self.PUSH_PREFIX}{sub_id}",
            "keys": {
                "p256dh": b64url_encode(public_key_bytes(key.public_key())),
                "auth": b64url_encode(auth),
            },
        }

    @staticmethod
    def address(subscription: dict[str, Any]) -> str:
        """The ``webpush:<subscription JSON>`` delivery address."""
        return "webpush:" + orjson.dumps(subscription).decode()

    def unsubscribe(self, subscription: dict[str, Any]) -> None:
        """The endpoint answers 410 Gone from now on."""
        with self._lock:
            self._gone.add(str(subscription["endpoint"]).rsplit("/", 1)[-1])

    @property
    def messages(self) -> list[PushMessage]:
        """Decrypted messages of accepted pushes, in arrival order."""
        with self._lock:
            return list(self._messages)

    # --- server (background thread) ------------------------------------------------------
    def _answer(self, request: web.Request, body: bytes) -> Reply:
        status, text, message = self._accept(request, body)
        if message is None:
            error = json.dumps({"code": status, "error": text}).encode()
            return Reply(status, error, {"Content-Type": "application/json; charset=utf-8"})
        with self._lock:
            self._messages.append(message)
        return Reply(201, b"", {"Location": f"{self.base_url}/m/{secrets.token_urlsafe(12)}"})

    def _content_type(self, reply: Reply) -> str | None:
        return None  # replies carry their own (push services answer 201 with no body)

    def _accept(self, request: web.Request, body: bytes) -> tuple[int, str, PushMessage | None]:
        """Push-service checks in order; (201, "", message) when accepted."""
        sub_id = request.path.removeprefix(self.PUSH_PREFIX)
        with self._lock:
            subscription = self._subscriptions.get(sub_id)
            gone = sub_id in self._gone
        if request.method != "POST" or not request.path.startswith(self.PUSH_PREFIX):
            return 404, "not found", None
        if subscription is None:
            return 404, "no such subscription", None
        if gone:
            return 410, "subscription expired", None
        try:
            vapid_key = self._verify(request.headers.get("Authorization", ""))
        except jwt.InvalidTokenError as error:
            return 401, f"invalid VAPID authorization: {error}", None
        if subscription.application_server_key not in (None, vapid_key):
            return 403, "VAPID key does not match the subscription", None
        ttl = request.headers.get("TTL", "")
        if not ttl.isdigit():
            return 400, "missing or invalid TTL header", None
        if request.headers.get("Content-Encoding", "").lower() != "aes128gcm":
            return 400, "Content-Encoding must be aes128gcm", None
        if len(body) > self.MAX_BODY_BYTES:
            return 413, f"payload too large ({len(body)} bytes)", None
        try:
            plaintext = decrypt(body, subscription.private_key, subscription.auth)
        except Exception as error:  # any decryption failure is the sender's fault
            return 400, f"cannot decrypt: {type(error).__name__}", None
        headers = request.headers
        message = PushMessage(
            sub_id, plaintext, int(ttl), headers.get("Urgency"), headers.get("Topic"), vapid_key
        )
        return 201, "", message

    def _verify(self, authorization: str) -> str:
        """VAPID check, cached per header value until its ``exp``."""
        now = time.time()
        with self._lock:
            cached = self._verified.get(authorization)
        if cached is not None and now < cached[1]:
            return cached[0]
        key = verify_vapid(authorization, self.base_url, now=now)
        token = authorization.split("t=", 1)[1].split(",", 1)[0]
        exp = float(jwt.decode(token, options={"verify_signature": False})["exp"])
        with self._lock:
            self._verified[authorization] = (key, exp)
        return key
