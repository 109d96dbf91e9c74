"""Twilio Programmable Messaging: one ``POST /2010-04-01/Accounts/{sid}/Messages.json`` per SMS.

``TwilioRestClient`` is the transport both Twilio connectors share (this one and
``connectors.voice.twilio``): a pooled aiohttp session with HTTP Basic auth sending form-encoded
POSTs, and the translation of Twilio's error body ``{code, message, more_info, status}`` into
the connector error vocabulary. It talks HTTP directly rather than through the twilio SDK: with
the same aiohttp underneath, the direct client needed ~1.5x less client CPU per message in
``benchmarks/sms_bench.py``, and the SDK's exception drops the response headers, so
``Retry-After`` could not be honoured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from yarl import URL

from connectors.base import (
    Connector,
    ConnectorError,
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.http import HttpSession, excerpt, parse_retry_after
from connectors.sms.segments import count_segments

if TYPE_CHECKING:
    from notiflow.settings import Settings

__all__ = ["TwilioRestClient", "TwilioSmsConnector"]

log = logging.getLogger(__name__)


class TwilioRestClient:
    """Creates Twilio REST resources (``Messages``, ``Calls``) and classifies failures.

    One attempt per call; safe to share across tasks on one event loop.
    """

    API_VERSION: ClassVar[str] = "2010-04-01"
    DEFAULT_BASE_URL: ClassVar[str] = "https://api.twilio.com"
    DEFAULT_TIMEOUT_S: ClassVar[float] = 10.0
    DEFAULT_MAX_CONNECTIONS: ClassVar[int] = 100
    USER_AGENT: ClassVar[str] = "notiflow-twilio/0.1"
    ERROR_EXCERPT_CHARS: ClassVar[int] = 200
    #: Twilio codes that mean "later": 20429 too many requests, 21611 sender queue full.
    RETRYABLE_CODES: ClassVar[frozenset[int]] = frozenset({20429, 21611})
    RETRYABLE_STATUSES: ClassVar[frozenset[int]] = frozenset({408, 425, 429})
    AUTH_STATUSES: ClassVar[frozenset[int]] = frozenset({401, 403})

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        user_agent: str = USER_AGENT,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("Twilio account SID and auth token are required")
        headers = {
            "Authorization": aiohttp.encode_basic_auth(account_sid, auth_token),
            "User-Agent": user_agent,
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",  # every request is a form POST
        }
        self._http = HttpSession(timeout=timeout, max_connections=max_connections, headers=headers)
        self.account_sid = account_sid
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_connections = max_connections
        self._urls: dict[str, URL] = {}

    def resource_url(self, resource: str) -> str:
        """``{base}/2010-04-01/Accounts/{sid}/{resource}.json``."""
        sid = quote(self.account_sid, safe="")
        return f"{self.base_url}/{self.API_VERSION}/Accounts/{sid}/{resource}.json"

    def _url(self, resource: str) -> URL:
        url = self._urls.get(resource)
        if url is None:
            url = self._urls[resource] = URL(self.resource_url(resource))
        return url

    async def open(self) -> None:
        await self._http.open()

    async def close(self) -> None:
        await self._http.close()

    async def create(self, resource: str, form: Mapping[str, str] | str) -> dict[str, Any]:
        """POST ``form`` (fields, or already form-encoded) to ``resource``; return the created
        resource (it has a ``sid``)."""
        body = (form if isinstance(form, str) else urlencode(form)).encode()
        status, headers, raw = await self._http.post(
            self._url(resource), body, allow_redirects=False
        )
        if 200 <= status < 300:
            created = _json_object(raw)
            if created is None or not isinstance(created.get("sid"), str):
                # The resource may exist: a retry can duplicate it, losing it is worse.
                text = excerpt(raw, self.ERROR_EXCERPT_CHARS)
                raise RetryableError(f"malformed_response: {text}", status=status)
            return created
        raise self.classify(status, raw, parse_retry_after(headers.get("Retry-After")))

    @classmethod
    def classify(cls, status: int, raw: bytes, retry_after: float | None) -> ConnectorError:
        """The error for a non-2xx answer, from its status and Twilio error body."""
        payload = _json_object(raw) or {}
        code, message = payload.get("code"), payload.get("message")
        label = f"twilio_{code}" if isinstance(code, int) else f"http_{status}"
        detail = str(message) if message else excerpt(raw, cls.ERROR_EXCERPT_CHARS)
        reason = f"{label}: {detail}" if detail else label
        if status in cls.AUTH_STATUSES:
            return PermanentError(f"auth_failed: {reason}", status=status)
        if code in cls.RETRYABLE_CODES or status in cls.RETRYABLE_STATUSES or status >= 500:
            return RetryableError(reason, status=status, retry_after=retry_after)
        return PermanentError(reason, status=status)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class TwilioSmsConnector(Connector):
    """SMS through Twilio from a number (``sender``) or a Messaging Service (which wins when
    both are set: Twilio then picks the sender from the service's pool).

    ``cost_usd`` is Twilio's ``price`` when the response carries one (it rarely does at
    creation), else an estimate: segments × ``PRICE_PER_SEGMENT_USD[encoding]``.
    """

    channel: ClassVar[str] = "sms"
    provider: ClassVar[str] = "twilio"

    #: Estimated price per segment (USD; US outbound list price), by encoding. An estimate:
    #: Twilio bills per segment and destination and reports the real price later.
    PRICE_PER_SEGMENT_USD: ClassVar[Mapping[str, float]] = {"GSM-7": 0.0083, "UCS-2": 0.0083}
    #: Twilio refuses longer bodies (error 21617).
    MAX_BODY_CHARS: ClassVar[int] = 1600

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        sender: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback_url: str | None = None,
        base_url: str = TwilioRestClient.DEFAULT_BASE_URL,
        timeout: float = TwilioRestClient.DEFAULT_TIMEOUT_S,
        max_connections: int = TwilioRestClient.DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if not sender and not messaging_service_sid:
            raise ValueError("a sender number or a messaging_service_sid is required")
        self.sender = sender
        self.messaging_service_sid = messaging_service_sid
        self.status_callback_url = status_callback_url
        # Fields every message shares, form-encoded once.
        self._shared: dict[str, str] = (
            {"MessagingServiceSid": messaging_service_sid}
            if messaging_service_sid
            else {"From": sender or ""}
        )
        if status_callback_url:
            self._shared["StatusCallback"] = status_callback_url
        self._shared_encoded = urlencode(self._shared)
        self.client = TwilioRestClient(
            account_sid,
            auth_token,
            base_url=base_url,
            timeout=timeout,
            max_connections=max_connections,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioSmsConnector:
        return cls(
            settings.twilio_account_sid or "",
            settings.twilio_auth_token or "",
            sender=settings.twilio_from,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            status_callback_url=settings.twilio_status_callback_url,
            base_url=settings.twilio_base_url,
            max_connections=max(settings.delivery_concurrency, 1),
        )

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    def form(self, delivery: Delivery) -> dict[str, str]:
        """The form fields POSTed for ``delivery``."""
        return self._own_fields(delivery) | self._shared

    def _own_fields(self, delivery: Delivery) -> dict[str, str]:
        if not delivery.address:
            raise InvalidRequest("missing_address")
        if not delivery.body:
            raise InvalidRequest("empty_body")
        if len(delivery.body) > self.MAX_BODY_CHARS:
            raise InvalidRequest(f"body_too_long: {len(delivery.body)} > {self.MAX_BODY_CHARS}")
        return {"To": delivery.address, "Body": delivery.body}

    async def send(self, delivery: Delivery) -> SendResult:
        form = f"{urlencode(self._own_fields(delivery))}&{self._shared_encoded}"
        info = count_segments(delivery.body)
        message = await self.client.create("Messages", form)
        price = _price(message.get("price"))
        estimate = info.segments * self.PRICE_PER_SEGMENT_USD[info.encoding]
        cost = round(price if price is not None else estimate, 8)
        return SendResult(
            provider_message_id=message["sid"],
            cost_usd=cost,
            detail={
                "segments": info.segments,
                "encoding": info.encoding,
                "status": message.get("status"),
                "cost_estimated": price is None,
            },
        )

    def __repr__(self) -> str:
        return f"TwilioSmsConnector(account_sid={self.client.account_sid!r})"


def _price(value: Any) -> float | None:
    """Twilio's ``price`` (a negative decimal string, or null) as a positive float."""
    try:
        return abs(float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None
