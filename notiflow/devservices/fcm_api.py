"""A local FCM HTTP v1 API: the stand-in for ``fcm.googleapis.com`` in tests, demos, benchmarks.

``POST /v1/projects/{project}/messages:send`` checks the Bearer token (tokens it issued, or the
``access_tokens`` it was given) and the project, validates the message like FCM does (a token,
string-only data, the 4096-byte limit) and answers ``{"name": "projects/p/messages/0:..."}``.
Errors use Google's shape: ``{"error": {"code", "message", "status", "details": [{"@type":
".../FcmError", "errorCode": ...}]}}``. ``POST /token`` is an OAuth2 JWT-bearer endpoint for
the service-account files it writes, so google-auth's real refresh path runs offline.

It is a ``WebhookReceiver`` (same lifecycle, recording and fault injection); a scripted 2xx
means "answer normally", a scripted error status is answered in Google's error shape.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import Credentials as GoogleCredentials

from notiflow.devservices.server import retry_after_value
from notiflow.devservices.webhook_receiver import Reply, WebhookReceiver

__all__ = ["FCM_ERRORS", "FcmApi", "StaticTokenCredentials", "google_error"]

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
#: FCM errorCode → (HTTP status, Google status, message).
FCM_ERRORS: dict[str, tuple[int, str, str]] = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push."),
}
_STATUS_CODES = {status: code for code, (status, _, _) in FCM_ERRORS.items()}
_SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_:\-]{16,4096}$")
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: google-auth signs service-account assertions for Google's endpoint, whatever ``token_uri``.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def google_error(
    status: int, google_status: str, message: str, error_code: str | None = None
) -> dict[str, Any]:
    """A Google API error body; with ``error_code``, an ``FcmError`` detail too."""
    details = [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}] if error_code else []
    return {
        "error": {"code": status, "message": message, "status": google_status, "details": details}
    }


class StaticTokenCredentials(GoogleCredentials):
    """A google-auth credential whose ``refresh`` takes a token from a callable: works offline."""

    def __init__(self, token_source: Callable[[], str], lifetime_s: float = 3600.0) -> None:
        super().__init__()
        self._token_source = token_source
        self._lifetime_s = lifetime_s
        self.refresh_count = 0

    def refresh(self, request: Any) -> None:
        self.token = self._token_source()
        self.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(
            seconds=self._lifetime_s
        )
        self.refresh_count += 1


class FcmApi(WebhookReceiver):
    """FCM HTTP v1 on a loopback port. ``base_url`` goes in ``NOTIFLOW_FCM_BASE_URL``."""

    NAME = "fcm-api"
    MAX_PAYLOAD_BYTES = 4096
    SCRIPTED_SUCCESS_IS_NORMAL = True

    def __init__(
        self,
        project_id: str = "notiflow-test",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        access_tokens: Iterable[str] = (),
        token_lifetime_s: int = 3600,
        delay_seconds: float = 0.0,
    ) -> None:
        super().__init__(host, port, delay_seconds=delay_seconds)
        self.project_id = project_id
        self.token_lifetime_s = token_lifetime_s
        self.token_requests = 0
        self._lock = threading.Lock()
        self._access_tokens: set[str] = set(access_tokens)
        self._dead_tokens: set[str] = set()
        self._signing_keys: dict[str, rsa.RSAPublicKey] = {}  # service-account key id → key
        self._sequence = 0

    # --- credentials ---------------------------------------------------------------------
    def issue_token(self) -> str:
        """A new OAuth access token this server accepts."""
        token = f"ya29.local-{secrets.token_urlsafe(24)}"
        with self._lock:
            self._access_tokens.add(token)
        return token

    def revoke_tokens(self) -> None:
        """Refuse every token issued so far (sends then get 401 UNAUTHENTICATED)."""
        with self._lock:
            self._access_tokens.clear()

    def credentials(self, lifetime_s: float = 3600.0) -> StaticTokenCredentials:
        """An offline google-auth credential whose refresh issues a token from this server."""
        return StaticTokenCredentials(self.issue_token, lifetime_s)

    def service_account_info(self) -> dict[str, str]:
        """A service-account JSON (fresh RSA key) whose ``token_uri`` is this server."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        with self._lock:
            self._signing_keys[key_id] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": key_id,
            "private_key": pem.decode(),
            "client_email": f"firebase-adminsdk@{self.project_id}.iam.gserviceaccount.com",
            "client_id": "100000000000000000000",
            "token_uri": f"{self.base_url}/token",
        }

    def write_service_account(self, path: str | Path) -> Path:
        target = Path(path)
        target.write_bytes(orjson.dumps(self.service_account_info()))
        return target

    # --- faults ----------------------------------------------------------------------------
    def kill_token(self, *tokens: str) -> None:
        """These registration tokens answer 404 ``UNREGISTERED`` from now on."""
        with self._lock:
            self._dead_tokens.update(tokens)

    def fail(
        self,
        error_code: str,
        *,
        message: str | None = None,
        retry_after: float | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` sends with an ``FcmError`` of ``error_code``."""
        status, google_status, default_message = FCM_ERRORS[error_code]
        body = google_error(status, google_status, message or default_message, error_code)
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.respond_with(status, body, headers, times=times)

    def script(self, statuses: Iterable[int]) -> None:
        """Answer the next sends with these statuses; errors in Google's shape."""
        for status in statuses:
            if status in _STATUS_CODES:
                self.fail(_STATUS_CODES[status])
            else:
                self.respond_with(status, google_error(status, "UNKNOWN", f"HTTP {status}"))

    def throttle(self, retry_after: str | float = 1, *, times: int = 1) -> None:
        """429 ``QUOTA_EXCEEDED`` with ``Retry-After`` for the next ``times`` sends."""
        status, google_status, message = FCM_ERRORS["QUOTA_EXCEEDED"]
        body = google_error(status, google_status, message, "QUOTA_EXCEEDED")
        headers = {"Retry-After": retry_after_value(retry_after)}
        self.respond_with(status, body, headers, times=times)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``message`` objects of accepted sends, in arrival order."""
        return [r.json["message"] for r in self.received if 200 <= r.status < 300]

    # --- server (background thread) ------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/token" and request.method == "POST":
            return self._token_response(await request.read())
        return await super()._handle(request)

    def _answer(self, request: web.Request, body: bytes) -> Reply:
        """FCM's own checks, in its order: path, auth, project, message, token."""
        match = _SEND_PATH.match(request.path)
        if request.method != "POST" or match is None:  # Google's front end answers in HTML
            return Reply(404, b"<html><title>Error 404 (Not Found)</title></html>")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            authorized = scheme.lower() == "bearer" and token in self._access_tokens
            dead = self._dead_tokens
        if not authorized:
            return _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if match.group(1) != self.project_id:
            return _error(403, "PERMISSION_DENIED", "Permission denied on this project.")
        try:
            message = orjson.loads(body)["message"]
            registration = message["token"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload: need message.token.", "")
        data = message.get("data") or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return _error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data' (TYPE_STRING)")
        notification = message.get("notification") or {}
        size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
        size += sum(len(str(v).encode()) for v in notification.values())
        if size > self.MAX_PAYLOAD_BYTES:
            return _error(400, "INVALID_ARGUMENT", f"Message is too big ({size} bytes)", "")
        if not isinstance(registration, str) or not _TOKEN_SHAPE.match(registration):
            message_text = "The registration token is not a valid FCM registration token"
            return _error(400, "INVALID_ARGUMENT", message_text, "INVALID_ARGUMENT")
        if registration in dead:
            return _error(404, "NOT_FOUND", FCM_ERRORS["UNREGISTERED"][2], "UNREGISTERED")
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
        name = f"projects/{self.project_id}/messages/0:{time.time_ns() // 1000}%{sequence:016x}"
        return Reply(200, orjson.dumps({"name": name}))

    def _token_response(self, body: bytes) -> web.Response:
        """OAuth2 JWT-bearer grant (RFC 7523) for the service accounts this server wrote."""
        self.token_requests += 1
        form = dict(pair.split("=", 1) for pair in body.decode().split("&") if "=" in pair)
        assertion = form.get("assertion", "")
        try:
            key_id = jwt.get_unverified_header(assertion).get("kid", "")
            with self._lock:
                key = self._signing_keys.get(key_id)
            if form.get("grant_type", "").replace("%3A", ":") != _JWT_BEARER or key is None:
                raise jwt.InvalidTokenError("unknown key or grant type")
            audiences = [GOOGLE_TOKEN_AUDIENCE, f"{self.base_url}/token"]
            jwt.decode(assertion, key, algorithms=["RS256"], audience=audiences)
        except jwt.InvalidTokenError as error:
            payload = {"error": "invalid_grant", "error_description": str(error)}
            return web.json_response(payload, status=400)
        answer = {
            "access_token": self.issue_token(),
            "expires_in": self.token_lifetime_s,
            "token_type": "Bearer",
        }
        return web.json_response(answer)


def _error(status: int, google_status: str, message: str, error_code: str | None = None) -> Reply:
    """``error_code=""`` adds a ``google.rpc.BadRequest`` detail instead of an ``FcmError``."""
    body = google_error(status, google_status, message, error_code or None)
    if error_code == "":
        violation: Mapping[str, Any] = {"field": "message", "description": message}
        body["error"]["details"] = [{"@type": BAD_REQUEST_TYPE, "fieldViolations": [violation]}]
    return Reply(status, orjson.dumps(body))
