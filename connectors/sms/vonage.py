"""Vonage (Nexmo) SMS API: one form-encoded ``POST {base}/sms/json`` per SMS.

Vonage answers HTTP 200 even when it refuses a message: the verdict is the ``status`` of each
entry in ``messages[]`` (one entry per concatenated part). ``"0"`` is success; the others are
classified by ``RETRYABLE_STATUSES`` (throttled, internal error, out of credit, too many binds)
and are otherwise permanent. Throttling (``"1"``) is reported as a 429 with ``retry_after`` so
the dispatcher pauses the provider instead of spending an attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlencode

import orjson
from yarl import URL

from connectors.base import (
    ConnectorError,
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.http import HttpConnector, HttpSession, excerpt, parse_retry_after
from connectors.sms.segments import SegmentInfo, count_segments

if TYPE_CHECKING:
    from notiflow.settings import Settings

__all__ = ["VonageSmsConnector"]

log = logging.getLogger(__name__)

#: SMS API ``status`` values (developer.vonage.com/api-errors/sms).
STATUS_NAMES: Mapping[str, str] = {
    "1": "throttled",
    "2": "missing_parameters",
    "3": "invalid_parameters",
    "4": "invalid_credentials",
    "5": "internal_error",
    "6": "invalid_message",
    "7": "number_barred",
    "8": "partner_account_barred",
    "9": "partner_quota_violation",
    "10": "too_many_existing_binds",
    "11": "account_not_enabled_for_http",
    "12": "message_too_long",
    "14": "invalid_signature",
    "15": "invalid_sender_address",
    "16": "invalid_ttl",
    "19": "facility_not_allowed",
    "20": "invalid_message_class",
    "23": "bad_callback",
    "29": "non_whitelisted_destination",
    "34": "invalid_or_missing_msisdn",
}


class VonageSmsConnector(HttpConnector):
    """SMS through the Vonage SMS API from ``sender`` (a number or an alphanumeric id).

    ``provider_message_id`` is the first part's ``message-id`` (all are in ``detail``);
    ``cost_usd`` is the sum of the parts' ``message-price`` (None when Vonage omits it).
    """

    channel: ClassVar[str] = "sms"
    provider: ClassVar[str] = "vonage"

    DEFAULT_BASE_URL: ClassVar[str] = "https://rest.nexmo.com"
    DEFAULT_TIMEOUT_S: ClassVar[float] = 10.0
    DEFAULT_MAX_CONNECTIONS: ClassVar[int] = 100
    USER_AGENT: ClassVar[str] = "notiflow-vonage/0.1"
    ERROR_EXCERPT_CHARS: ClassVar[int] = 200
    #: ``status`` values worth retrying: throttled, internal error, out of credit, too many binds.
    RETRYABLE_STATUSES: ClassVar[frozenset[str]] = frozenset({"1", "5", "9", "10"})
    #: Seconds to wait after ``"1"`` (throttled); Vonage sends no Retry-After.
    THROTTLE_RETRY_AFTER_S: ClassVar[float] = 1.0
    MAX_CLIENT_REF_CHARS: ClassVar[int] = 100

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        sender: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        user_agent: str = USER_AGENT,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("Vonage api_key and api_secret are required")
        if not sender:
            raise ValueError("a sender (number or alphanumeric id) is required")
        headers = {
            "User-Agent": user_agent,
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",  # every request is a form
        }
        self._http = HttpSession(timeout=timeout, max_connections=max_connections, headers=headers)
        self.api_key = api_key
        self.sender = sender.removeprefix("+")
        # Fields every message shares (credentials, sender), form-encoded once.
        self._shared = {"api_key": api_key, "api_secret": api_secret, "from": self.sender}
        self._shared_encoded = urlencode(self._shared)
        self.url = f"{base_url.rstrip('/')}/sms/json"
        self._url = URL(self.url)
        self.timeout = timeout
        self.max_connections = max_connections
        self.user_agent = user_agent

    @classmethod
    def from_settings(cls, settings: Settings) -> VonageSmsConnector:
        return cls(
            settings.vonage_api_key or "",
            settings.vonage_api_secret or "",
            sender=settings.vonage_from or "",
            base_url=settings.vonage_base_url,
            max_connections=max(settings.delivery_concurrency, 1),
        )

    def form(self, delivery: Delivery) -> dict[str, str]:
        """The form fields POSTed for ``delivery`` (``type=unicode`` when it needs UCS-2)."""
        return self._shared | self._own_fields(delivery, count_segments(delivery.body))

    def _own_fields(self, delivery: Delivery, info: SegmentInfo) -> dict[str, str]:
        if not delivery.body:
            raise InvalidRequest("empty_body")
        fields = {
            "to": _msisdn(delivery.address),
            "text": delivery.body,
            "client-ref": delivery.notification_id[: self.MAX_CLIENT_REF_CHARS],
        }
        if info.encoding == "UCS-2":
            fields["type"] = "unicode"
        return fields

    async def send(self, delivery: Delivery) -> SendResult:
        info = count_segments(delivery.body)
        body = f"{self._shared_encoded}&{urlencode(self._own_fields(delivery, info))}".encode()
        status, headers, raw = await self._http.post(self._url, body, allow_redirects=False)
        if not 200 <= status < 300:
            raise self._http_error(status, raw, parse_retry_after(headers.get("Retry-After")))
        parts = self._parts(raw, status)
        ids = [str(part.get("message-id")) for part in parts]
        prices = [
            p for p in (_decimal(part.get("message-price")) for part in parts) if p is not None
        ]
        return SendResult(
            provider_message_id=ids[0],
            cost_usd=round(sum(prices), 8) if prices else None,
            detail={
                "segments": info.segments,
                "encoding": info.encoding,
                "message_ids": ids,
                "network": parts[0].get("network"),
            },
        )

    # --- internals -----------------------------------------------------------------------
    def _parts(self, raw: bytes, status: int) -> list[dict[str, Any]]:
        """The accepted parts, or raise the classified error of the first refused one."""
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        parts = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            text = excerpt(raw, self.ERROR_EXCERPT_CHARS)
            raise RetryableError(f"malformed_response: {text}", status=status)
        refused = [p for p in parts if str(p.get("status")) != "0"]
        if not refused:
            return parts
        error = self._status_error(refused[0])
        if len(refused) < len(parts):  # a retry would repeat the parts that went out
            accepted = len(parts) - len(refused)
            raise PermanentError(
                f"partial_send: {accepted} of {len(parts)} parts accepted; {error.reason}"
            )
        raise error

    @classmethod
    def _status_error(cls, part: Mapping[str, Any]) -> ConnectorError:
        code = str(part.get("status"))
        name = STATUS_NAMES.get(code, "unknown_status")
        text = part.get("error-text")
        reason = f"vonage_status_{code} {name}" + (f": {text}" if text else "")
        if code == "1":
            return RetryableError(reason, status=429, retry_after=cls.THROTTLE_RETRY_AFTER_S)
        if code in cls.RETRYABLE_STATUSES:
            return RetryableError(reason)
        if code in {"4", "8", "14"}:
            return PermanentError(f"auth_failed: {reason}")
        return PermanentError(reason)

    @classmethod
    def _http_error(cls, status: int, raw: bytes, retry_after: float | None) -> ConnectorError:
        text = excerpt(raw, cls.ERROR_EXCERPT_CHARS)
        reason = f"http_{status}: {text}" if text else f"http_{status}"
        if status in (401, 403):
            return PermanentError(f"auth_failed: {reason}", status=status)
        if status in (408, 425, 429) or status >= 500:
            return RetryableError(reason, status=status, retry_after=retry_after)
        return PermanentError(reason, status=status)

    def __repr__(self) -> str:
        return f"VonageSmsConnector(api_key={self.api_key!r}, sender={self.sender!r})"


_PUNCTUATION = str.maketrans("", "", " -().")


def _msisdn(address: str) -> str:
    """E.164 (``+44 7700 900000``) → the digits Vonage wants (``447700900000``)."""
    digits = address.translate(_PUNCTUATION).removeprefix("+")
    if not digits.isdigit() or not 7 <= len(digits) <= 15:
        raise InvalidRequest(f"invalid_number: {address!r}")
    return digits


def _decimal(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
