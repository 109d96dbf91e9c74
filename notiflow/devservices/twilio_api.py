"""A local stand-in for the Twilio REST API (Messages and Calls), for tests and benchmarks.

Same lifecycle as ``WebhookReceiver``: an ``aiohttp.web`` app on its own event loop in a
background thread, on a loopback port the OS picks. It checks HTTP Basic auth and the
AccountSid in the path, validates the form like Twilio (missing fields, the magic test numbers
``+1500555000x``) and answers 201 with a realistic resource (``SM``/``CA`` + 32 hex sid), or
Twilio's error body ``{code, message, more_info, status}``. Faults can be scripted.

The provider-neutral server is ``provider_api.ProviderApiServer``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any
from xml.etree import ElementTree

import orjson
from aiohttp import web

from connectors.sms.segments import count_segments
from notiflow.devservices.provider_api import ProviderApiServer, Reply, basic_auth, json_reply
from notiflow.devservices.server import retry_after_value

__all__ = ["TEST_ACCOUNT_SID", "TEST_AUTH_TOKEN", "TwilioApi", "twilio_error"]

log = logging.getLogger(__name__)

TEST_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TEST_AUTH_TOKEN = "notiflow-test-auth-token"
#: Twilio's test-credential magic numbers → (code, message) of the 400 they cause.
SMS_MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number {to} is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number {to} is not currently reachable via SMS."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for {to}."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number {to} is not a valid mobile number"),
}
SMS_MAGIC_FROM = {
    "+15005550001": (21212, "The 'From' number {from_} is not a valid phone number."),
    "+15005550007": (21606, "The 'From' phone number is not owned by your account."),
    "+15005550008": (21611, "This 'From' number has exceeded the maximum queued messages."),
}
CALL_MAGIC_TO = {
    "+15005550001": (21217, "Phone number {to} does not appear to be valid"),
    "+15005550002": (21214, "'To' phone number {to} cannot be reached"),
    "+15005550003": (21215, "Account not authorized to call {to}."),
    "+15005550004": (21216, "Call blocked: {to} is blacklisted."),
}
MAX_BODY_CHARS = 1600
MAX_TWIML_CHARS = 4000
Problem = tuple[int, str] | None


def twilio_error(
    status: int, code: int, message: str, headers: Mapping[str, str] | None = None
) -> Reply:
    """Twilio's error body: ``{"code": 21211, "message": ..., "more_info": ..., "status": 400}``."""
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    body = {"code": code, "message": message, "more_info": more_info, "status": status}
    return json_reply(status, body, headers)


class TwilioApi(ProviderApiServer):
    """``POST /2010-04-01/Accounts/{sid}/Messages.json`` and ``.../Calls.json``.

    Precedence per request: the scripted queue (``fail_next``, ``throttle``, ``drop_next``,
    ``malformed_next``, ``script``), then auth, then validation, then 201.
    """

    NAME = "twilio-api"
    RESOURCES = ("Messages.json", "Calls.json")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        account_sid: str = TEST_ACCOUNT_SID,
        auth_token: str = TEST_AUTH_TOKEN,
        delay_seconds: float = 0.0,
    ) -> None:
        super().__init__(host, port, delay_seconds=delay_seconds)
        self.account_sid, self.auth_token = account_sid, auth_token

    def fail_next(
        self, status: int, code: int, message: str = "", *, times: int = 1, **headers: str
    ) -> None:
        """Answer the next ``times`` requests with this Twilio error."""
        self.push(twilio_error(status, code, message or HTTPStatus(status).phrase, headers), times)

    def throttle(self, retry_after: str | float = 1, *, times: int = 1) -> None:
        """429 / 20429 with ``Retry-After`` for the next ``times`` requests."""
        headers = {"Retry-After": retry_after_value(retry_after)}
        reply = twilio_error(429, 20429, "Too Many Requests", headers)
        self.push(reply, times)

    def _error(self, status: int) -> Reply:
        return twilio_error(status, 20000 + status, HTTPStatus(status).phrase)

    def _answer(self, request: web.Request, form: dict[str, str]) -> Reply:
        auth = basic_auth(request.headers.get("Authorization", ""))
        if auth != (self.account_sid, self.auth_token):
            headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            return twilio_error(401, 20003, "Authenticate", headers)
        parts = request.path.strip("/").split("/")
        if (
            len(parts) != 4
            or parts[:2] != ["2010-04-01", "Accounts"]
            or (parts[3] not in self.RESOURCES)
        ):
            return twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        if parts[2] != self.account_sid:
            return twilio_error(403, 20003, "Permission denied")
        if request.method != "POST":
            return twilio_error(405, 20004, "Method not allowed")
        if parts[3] == "Messages.json":
            return self._message(form)
        return self._call(form)

    def _message(self, form: dict[str, str]) -> Reply:
        to, from_, service = (
            form.get("To", ""),
            form.get("From", ""),
            form.get("MessagingServiceSid"),
        )
        if problem := _message_problem(form):
            return twilio_error(400, problem[0], problem[1].format(to=to, from_=from_))
        sid, body = "SM" + secrets.token_hex(16), form["Body"]
        resource = self._resource("Messages", sid) | {
            "to": to,
            "from": from_ or None,
            "messaging_service_sid": service,
            "body": body,
            "status": "accepted" if service else "queued",
            "num_segments": str(count_segments(body).segments),
            "num_media": "0",
            "error_code": None,
            "error_message": None,
            "date_sent": None,
        }
        return Reply(201, orjson.dumps(resource), accepted=True)

    def _call(self, form: dict[str, str]) -> Reply:
        to, from_ = form.get("To", ""), form.get("From", "")
        if problem := _call_problem(form):
            return twilio_error(400, problem[0], problem[1].format(to=to))
        resource = self._resource("Calls", "CA" + secrets.token_hex(16)) | {
            "to": to,
            "to_formatted": to,
            "from": from_,
            "from_formatted": from_,
            "status": "queued",
            "start_time": None,
            "end_time": None,
            "duration": None,
            "answered_by": None,
        }
        return Reply(201, orjson.dumps(resource), accepted=True)

    def _resource(self, resource: str, sid: str) -> dict[str, Any]:
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "price": None,
            "price_unit": "USD",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/{resource}/{sid}.json",
        }


def _message_problem(form: Mapping[str, str]) -> Problem:
    to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
    if not to:
        return 21604, "A 'To' phone number is required."
    if not from_ and not form.get("MessagingServiceSid"):
        return 21603, "A 'From' or 'MessagingServiceSid' parameter is required."
    if not body:
        return 21602, "Message body is required."
    if len(body) > MAX_BODY_CHARS:
        return 21617, f"The message body exceeds the {MAX_BODY_CHARS} character limit."
    if to in SMS_MAGIC_TO or not _plausible_number(to):
        return SMS_MAGIC_TO.get(to, SMS_MAGIC_TO["+15005550001"])
    return SMS_MAGIC_FROM.get(from_)


def _call_problem(form: Mapping[str, str]) -> Problem:
    to, twiml = form.get("To", ""), form.get("Twiml", "")
    if not to:
        return 21201, "No 'To' number is specified"
    if not form.get("From"):
        return 21213, "No 'From' number is specified"
    if not (twiml or form.get("Url") or form.get("ApplicationSid")):
        return 21200, "One of Url, Twiml or ApplicationSid is required"
    if len(twiml) > MAX_TWIML_CHARS:
        return 32018, f"Twiml size exceeded maximum allowed value of {MAX_TWIML_CHARS} characters"
    if twiml and not _well_formed(twiml):
        return 12100, "Document parse failure"
    if to in CALL_MAGIC_TO or not _plausible_number(to):
        return CALL_MAGIC_TO.get(to, CALL_MAGIC_TO["+15005550001"])
    return None


def _plausible_number(value: str) -> bool:
    """E.164-ish: ``+`` and 8-15 digits, optionally behind a channel (``whatsapp:+1...``)."""
    number = value.rpartition(":")[2]
    return number.startswith("+") and number[1:].isdigit() and 8 <= len(number) - 1 <= 15


def _well_formed(twiml: str) -> bool:
    try:
        return ElementTree.fromstring(twiml).tag == "Response"
    except ElementTree.ParseError:
        return False
