"""A local stand-in for Mailgun's Messages API (``POST /v3/{domain}/messages``).

A ``WebhookReceiver`` (same lifecycle and fault injection: ``script``, ``throttle``,
``drop_next``, latency) that answers like Mailgun: HTTP Basic ``api:<key>`` (``401 Forbidden``
otherwise), form fields parsed from ``application/x-www-form-urlencoded`` or
``multipart/form-data``, ``200 {"id": "<...>", "message": "Queued. Thank you."}``, and errors
as ``{"message": ...}``.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from notiflow.devservices.server import basic_auth, retry_after_value
from notiflow.devservices.webhook_receiver import ReceivedRequest, Reply, WebhookReceiver

__all__ = ["MailgunApi", "parse_form"]

QUEUED = "Queued. Thank you."
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))')
_FIELD_NAME = re.compile(r'(?i)content-disposition:[^\r\n]*?\bname="([^"]*)"')


def parse_form(content_type: str, body: bytes) -> dict[str, list[str]]:
    """Form fields of a urlencoded or multipart body (repeated names keep every value).

    The multipart reader is deliberately small (fields, not files; UTF-8 values): enough for
    a stand-in, and ~50x faster than going through ``email.parser``.
    """
    fields: dict[str, list[str]] = {}
    if content_type.startswith("multipart/form-data"):
        match = _BOUNDARY.search(content_type)
        if match is None:
            return fields
        delimiter = b"--" + (match.group(1) or match.group(2)).encode()
        for part in body.split(delimiter)[1:]:
            if part.startswith(b"--"):  # the closing delimiter
                break
            head, _, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
            name = _FIELD_NAME.search(head.decode("utf-8", "replace"))
            if name is not None:
                text = value.removesuffix(b"\r\n").decode("utf-8", "replace")
                fields.setdefault(name.group(1), []).append(text)
        return fields
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, []).append(value)
    return fields


def mailgun_error(message: str) -> bytes:
    return orjson.dumps({"message": message})


class MailgunApi(WebhookReceiver):
    """Answers ``POST /v3/{domain}/messages`` for ``domain``; ``count`` is accepted messages.

    Precedence: path rules, scripted replies, auth, domain, validation, then 200.
    """

    NAME = "mailgun-api"

    def __init__(
        self,
        api_key: str = "key-test",
        domain: str = "mg.example.org",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        delay_seconds: float = 0.0,
    ) -> None:
        super().__init__(host, port, delay_seconds=delay_seconds)
        self.api_key, self.domain = api_key, domain

    @staticmethod
    def form(request: ReceivedRequest) -> dict[str, list[str]]:
        """The form fields of a recorded request."""
        return parse_form(request.headers.get("Content-Type", ""), request.body)

    # --- fault injection -----------------------------------------------------------------
    def script(self, statuses: Iterable[int]) -> None:
        """Answer the next requests with these statuses (Mailgun-shaped bodies)."""
        for status in statuses:
            body = _queued(self.domain) if 200 <= status < 300 else mailgun_error(f"{status}")
            self.respond_with(status, body)

    def throttle(self, retry_after: str | float = 1, *, times: int = 1) -> None:
        """429 with ``Retry-After`` and ``X-RateLimit-Reset`` (unix milliseconds)."""
        value = retry_after_value(retry_after)
        reset = f"{(time.time() + float(value)) * 1000:.0f}"
        headers = {"Retry-After": value, "X-RateLimit-Reset": reset}
        self.respond_with(429, mailgun_error("Too many requests"), headers, times=times)

    # --- server --------------------------------------------------------------------------
    def _content_type(self, reply: Reply) -> str:
        return "text/plain" if reply.status == 401 else "application/json"

    def _answer(self, request: web.Request, body: bytes) -> Reply:
        parts = request.path.strip("/").split("/")
        if request.method != "POST" or len(parts) != 3 or parts[0] != "v3":
            return Reply(404, mailgun_error("not found"))
        if basic_auth(request.headers.get("Authorization", "")) != ("api", self.api_key):
            return Reply(401, b"Forbidden")
        if parts[1] != self.domain:
            return Reply(404, mailgun_error(f"Domain not found: {parts[1]}"))
        if parts[2] != "messages":
            return Reply(404, mailgun_error("not found"))
        fields = parse_form(request.headers.get("Content-Type", ""), body)
        for required in ("from", "to"):
            if not fields.get(required) or not fields[required][0]:
                return Reply(400, mailgun_error(f"'{required}' parameter is missing"))
        if not any(
            value for name in ("text", "html", "template") for value in fields.get(name, [])
        ):
            return Reply(400, mailgun_error("Need at least one of 'text', 'html' or 'template'"))
        if "@" not in fields["to"][0]:
            message = f"to parameter is not a valid address: {fields['to'][0]}"
            return Reply(400, mailgun_error(message))
        return Reply(200, _queued(self.domain))


def _queued(domain: str) -> bytes:
    message_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{secrets.token_hex(8)}@{domain}>"
    return orjson.dumps({"id": message_id, "message": QUEUED})
