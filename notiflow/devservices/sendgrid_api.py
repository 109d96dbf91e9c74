"""A local stand-in for SendGrid's v3 Mail Send API (``POST /v3/mail/send``).

A ``WebhookReceiver`` (same lifecycle: background thread, free loopback port, ``start``/``stop``,
context manager, ``received``, ``count``, ``wait_for``, ``script``, ``drop_next``, latency)
whose ``_answer`` answers like SendGrid: it checks the Bearer key and the request's shape,
answers ``202`` with an ``X-Message-Id`` header, and errors in SendGrid's ``{"errors": [...]}``
shape.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from notiflow.devservices.webhook_receiver import Reply, WebhookReceiver

__all__ = ["SendGridApi", "sendgrid_error"]

MAX_PERSONALIZATIONS = 1000


def sendgrid_error(message: str, field: str | None = None, help_url: str | None = None) -> bytes:
    """An error body in SendGrid's shape."""
    return orjson.dumps({"errors": [{"message": message, "field": field, "help": help_url}]})


class SendGridApi(WebhookReceiver):
    """Answers ``POST /v3/mail/send``; ``count`` is accepted requests, ``messages`` accepted
    personalizations. Precedence: path rules, scripted replies, auth, validation, then 202."""

    NAME = "sendgrid-api"
    SEND_PATH = "/v3/mail/send"

    def __init__(
        self,
        api_key: str = "SG.test-key",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        delay_seconds: float = 0.0,
    ) -> None:
        super().__init__(host, port, delay_seconds=delay_seconds)
        self.api_key = api_key
        self._messages = 0
        self._rejected: dict[str, str] = {}
        self._rejected_lock = threading.Lock()

    @property
    def messages(self) -> int:
        """Personalizations (one message each) in accepted requests."""
        with self._cond:
            return self._messages

    def wait_for_messages(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._messages >= n, timeout)

    def clear(self) -> None:
        super().clear()
        with self._cond:
            self._messages = 0
        with self._rejected_lock:
            self._rejected.clear()

    # --- fault injection -----------------------------------------------------------------
    def script(self, statuses: Iterable[int]) -> None:
        """Answer the next requests with these statuses (SendGrid-shaped error bodies)."""
        for status in statuses:
            if 200 <= status < 300:
                self.respond_with(status, b"", {"X-Message-Id": _message_id()})
            else:
                self.respond_with(status, sendgrid_error(f"scripted {status}"))

    def throttle(self, retry_after: str | float = 1, *, times: int = 1) -> None:
        """429 with ``X-RateLimit-Reset`` (unix time) ``retry_after`` seconds from now."""
        reset = f"{time.time() + float(retry_after):.0f}"
        headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0"}
        headers["X-RateLimit-Reset"] = reset
        self.respond_with(429, sendgrid_error("too many requests"), headers, times=times)

    def reject_address(self, address: str, message: str = "Invalid email address") -> None:
        """Always answer 400 naming the personalization that sends to ``address``."""
        with self._rejected_lock:
            self._rejected[address.lower()] = message

    # --- server --------------------------------------------------------------------------
    def _on_accepted(self, request: web.Request, body: bytes) -> None:
        if request.path == self.SEND_PATH:
            with self._cond:
                self._messages += len(orjson.loads(body).get("personalizations", []))
                self._cond.notify_all()

    def _answer(self, request: web.Request, body: bytes) -> Reply:
        if request.path != self.SEND_PATH or request.method != "POST":
            return Reply(404, sendgrid_error("not found"))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            message = "The provided authorization grant is invalid, expired, or revoked"
            return Reply(401, sendgrid_error(message))
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            return Reply(400, sendgrid_error("Content-Type should be application/json."))
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Reply(400, sendgrid_error("Bad Request", None))
        problem = self._validate(message)
        if problem is not None:
            return Reply(400, sendgrid_error(problem[1], problem[0]))
        return Reply(202, b"", {"X-Message-Id": _message_id()})

    def _validate(self, message: Any) -> tuple[str | None, str] | None:
        """(field, message) of the first problem, as SendGrid reports it; None if valid."""
        if not isinstance(message, dict):
            return None, "Bad Request"
        personalizations = message.get("personalizations")
        if not isinstance(personalizations, list) or not personalizations:
            return "personalizations", "You must have at least one personalization."
        if len(personalizations) > MAX_PERSONALIZATIONS:
            return "personalizations", "The personalization block is limited to 1000."
        seen: set[str] = set()
        for index, personalization in enumerate(personalizations):
            problem = self._check_personalization(index, personalization, seen)
            if problem is not None:
                return problem
        sender = message.get("from")
        if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
            return "from.email", "The from email does not contain a valid address."
        if not isinstance(message.get("subject"), str) or not message["subject"]:
            return "subject", "The subject is required."
        content = message.get("content")
        if not isinstance(content, list) or not content:
            return "content", "Unless a valid template_id is provided, content is required."
        for index, part in enumerate(content):
            if not isinstance(part, dict) or not part.get("type"):
                return f"content.{index}.type", "The content type is required."
            if not isinstance(part.get("value"), str) or not part["value"]:
                return f"content.{index}.value", "The content value must be a string."
            if index > 0 and part["type"] == "text/plain":
                return f"content.{index}.type", "text/plain must come first."
        return None

    def _check_personalization(
        self, index: int, personalization: Any, seen: set[str]
    ) -> tuple[str, str] | None:
        field = f"personalizations.{index}"
        to = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(to, list) or not to:
            return f"{field}.to", "The to array is required for all personalization objects."
        for n, recipient in enumerate(to):
            address = str(recipient.get("email", "")) if isinstance(recipient, dict) else ""
            if "@" not in address:
                return f"{field}.to.{n}.email", "Does not contain a valid address."
            with self._rejected_lock:
                rejected = self._rejected.get(address.lower())
            if rejected is not None:
                return f"{field}.to.{n}.email", rejected
            if address.lower() in seen:
                return field, "Each email address in the personalization block should be unique."
            seen.add(address.lower())
        custom_args = personalization.get("custom_args", {})
        if not isinstance(custom_args, dict) or not all(
            isinstance(v, str) for v in custom_args.values()
        ):
            return f"{field}.custom_args", "Custom args must be strings."
        return None


def _message_id() -> str:
    return secrets.token_urlsafe(16)[:22]
