"""SendGrid v3 Mail Send: ``POST {base}/v3/mail/send`` with ``Authorization: Bearer <key>``.

One JSON request per message; ``send_batch`` folds deliveries with identical content (subject,
text, HTML) into one request with up to 1,000 personalizations, one per delivery, each with its
own ``to``, ``custom_args`` (notification, tenant and user ids, for the event webhook) and
headers (List-Unsubscribe per RFC 2369/8058, unless the category is transactional). SendGrid
answers ``202`` with an ``X-Message-Id`` header, shared by every personalization of a request.

Errors: a ``400`` carries ``{"errors": [{"message", "field", "help"}]}``. When every error
names a personalization (``personalizations.3.to.0.email``), only those deliveries fail
permanently; the rest of the batch gets a retryable ``batch_rejected`` so the dispatcher sends
it again without them. ``401``/``403`` are permanent, ``413`` an invalid request, ``429`` and
``5xx`` (and timeouts, resets, unparseable ``400`` bodies) retryable, with ``Retry-After`` or
``X-RateLimit-Reset`` honoured.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from connectors.base import (
    ConnectorError,
    Delivery,
    InvalidRequest,
    Outcome,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.email import mime
from connectors.http import HttpConnector, HttpSession, excerpt, parse_retry_after

if TYPE_CHECKING:
    from notiflow.settings import Settings

__all__ = ["SendGridConnector", "rate_limit_wait"]

log = logging.getLogger(__name__)

_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")
#: (delivery index in the caller's batch, its personalization object)
_Item = tuple[int, dict[str, Any]]


def rate_limit_wait(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait: ``Retry-After``, else ``X-RateLimit-Reset`` (a unix time, or seconds
    when small; milliseconds when huge)."""
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if retry_after is not None:
        return retry_after
    try:
        reset = float(headers.get("X-RateLimit-Reset", ""))
    except ValueError:
        return None
    if reset > 1e12:  # epoch milliseconds
        reset /= 1000
    if reset > 1e9:  # epoch seconds
        return max(0.0, reset - (time.time() if now is None else now))
    return max(0.0, reset)


class SendGridConnector(HttpConnector):
    """Email through SendGrid's v3 API. Safe to share across tasks on one event loop."""

    channel: ClassVar[str] = "email"
    provider: ClassVar[str] = "sendgrid"
    max_batch_size: ClassVar[int] = 1000  # personalizations per request (SendGrid's limit)

    DEFAULT_BASE_URL: ClassVar[str] = "https://api.sendgrid.com"
    SEND_PATH: ClassVar[str] = "/v3/mail/send"
    DEFAULT_TIMEOUT_S: ClassVar[float] = 10.0
    DEFAULT_MAX_CONNECTIONS: ClassVar[int] = 100
    USER_AGENT: ClassVar[str] = "notiflow-sendgrid/0.1"
    ERROR_EXCERPT_CHARS: ClassVar[int] = 300
    RETRYABLE_STATUSES: ClassVar[frozenset[int]] = frozenset({408, 425, 429})

    def __init__(
        self,
        api_key: str,
        *,
        sender: str = "notiflow <noreply@notiflow.local>",
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if not api_key:
            raise ValueError("SendGrid API key is required")
        self._http = HttpSession(timeout=timeout, max_connections=max_connections)
        name, address = mime.parse_address(sender)  # ValueError on a bad sender
        self.sender = sender
        self.domain = address.rpartition("@")[2]
        self.url = base_url.rstrip("/") + self.SEND_PATH
        self.timeout, self.max_connections = timeout, max_connections
        self._from = {"email": address, "name": name} if name else {"email": address}
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": self.USER_AGENT,
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> SendGridConnector:
        """Key and URL from ``sendgrid_*``; the From address is ``smtp_from`` (shared)."""
        return cls(
            settings.sendgrid_api_key or "",
            sender=settings.smtp_from,
            base_url=settings.sendgrid_base_url,
            max_connections=max(settings.delivery_concurrency, 1),
        )

    async def send(self, delivery: Delivery) -> SendResult:
        outcome = (await self._request([delivery], [(0, self.personalization(delivery))]))[0]
        if isinstance(outcome, ConnectorError):
            raise outcome
        return outcome

    async def send_batch(self, deliveries: Sequence[Delivery], concurrency: int) -> list[Outcome]:
        """Deliveries with the same content share a request (≤ 1,000, addresses unique)."""
        outcomes: list[Outcome | None] = [None] * len(deliveries)
        groups: dict[tuple[str, str, str | None], list[tuple[list[_Item], set[str]]]] = {}
        for index, delivery in enumerate(deliveries):
            try:
                item = (index, self.personalization(delivery))
            except InvalidRequest as error:
                outcomes[index] = error
                continue
            subject = delivery.subject or mime.fallback_subject(delivery.body)
            chunks = groups.setdefault((subject, delivery.body, delivery.html), [])
            self._place(chunks, item)
        gate = asyncio.Semaphore(max(concurrency, 1))

        async def run(chunk: list[_Item]) -> None:
            async with gate:
                try:
                    results = await self._request([deliveries[i] for i, _ in chunk], chunk)
                except Exception as error:  # a connector bug must not lose the batch
                    unexpected = RetryableError(
                        f"unexpected_error: {type(error).__name__}: {error}"
                    )
                    results = [unexpected] * len(chunk)
            for (index, _), result in zip(chunk, results, strict=True):
                outcomes[index] = result

        await asyncio.gather(*(run(chunk) for chunks in groups.values() for chunk, _ in chunks))
        return [o if o is not None else RetryableError("not_attempted") for o in outcomes]

    def personalization(self, delivery: Delivery) -> dict[str, Any]:
        """The personalization object of one delivery (``InvalidRequest`` if unusable)."""
        try:
            name, address = mime.parse_address(delivery.address)
        except ValueError as error:
            raise InvalidRequest(f"invalid_address: {error}") from error
        headers = {"X-Notiflow-Notification-Id": delivery.notification_id}
        if delivery.category != "transactional":
            url = delivery.metadata.get("unsubscribe_url")
            headers.update(mime.unsubscribe_headers(delivery.notification_id, url, self.domain))
        return {
            "to": [{"email": address, "name": name} if name else {"email": address}],
            "custom_args": {
                "notification_id": delivery.notification_id,
                "tenant_id": delivery.tenant_id,
                "user_id": delivery.user_id,
                "category": delivery.category,
            },
            "headers": headers,
        }

    def payload(self, delivery: Delivery, personalizations: list[dict[str, Any]]) -> bytes:
        """The request body: ``delivery``'s content for every personalization given."""
        content = []
        if delivery.body:
            content.append({"type": "text/plain", "value": delivery.body})
        if delivery.html:
            content.append({"type": "text/html", "value": delivery.html})
        if not content:
            raise InvalidRequest("empty_content: neither text nor HTML body")
        message = {
            "personalizations": personalizations,
            "from": self._from,
            "subject": delivery.subject or mime.fallback_subject(delivery.body),
            "content": content,
        }
        return orjson.dumps(message)

    # --- internals -----------------------------------------------------------------------
    def _place(self, chunks: list[tuple[list[_Item], set[str]]], item: _Item) -> None:
        """Add to the first chunk with room that lacks this address (SendGrid wants each
        address once per request)."""
        address = item[1]["to"][0]["email"].lower()
        for members, addresses in chunks:
            if len(members) < self.max_batch_size and address not in addresses:
                members.append(item)
                addresses.add(address)
                return
        chunks.append(([item], {address}))

    async def _request(self, deliveries: list[Delivery], items: list[_Item]) -> list[Outcome]:
        """One POST for ``items`` (all with ``deliveries[0]``'s content): one outcome each."""
        try:
            body = self.payload(deliveries[0], [p for _, p in items])
            status, headers, raw = await self._http.post(self.url, body, self._headers)
        except ConnectorError as error:
            return [error] * len(items)
        if 200 <= status < 300:
            message_id, n = headers.get("X-Message-Id"), len(items)
            detail = {"status": status, "batch": n}
            return [SendResult(provider_message_id=message_id, detail=dict(detail)) for _ in items]
        return self._classify(status, headers, raw, len(items))

    def _classify(
        self, status: int, headers: Mapping[str, str], raw: bytes, count: int
    ) -> list[Outcome]:
        errors = _errors(raw)
        limit = self.ERROR_EXCERPT_CHARS
        detail = "; ".join(_describe(e) for e in errors)[:limit] if errors else excerpt(raw, limit)
        reason = f"http_{status}: {detail}" if detail else f"http_{status}"
        if status in self.RETRYABLE_STATUSES or status >= 500:
            wait = rate_limit_wait(headers)
            return [RetryableError(reason, status=status, retry_after=wait)] * count
        if status == 413:
            return [InvalidRequest(reason, status=status)] * count
        if status == 400 and not errors:  # not SendGrid's shape: a proxy or a garbled reply
            return [RetryableError(f"{reason} (unrecognised error body)", status=status)] * count
        if status == 400 and errors:
            blamed = _blamed(errors, count)
            if blamed is not None and count > 1:
                innocent = RetryableError(
                    f"batch_rejected: another recipient failed ({reason})",
                    status=status,
                    retry_after=0.0,
                )
                return [
                    InvalidRequest(reason, status=status) if i in blamed else innocent
                    for i in range(count)
                ]
            return [InvalidRequest(reason, status=status)] * count
        return [PermanentError(reason, status=status)] * count

    def __repr__(self) -> str:
        return f"SendGridConnector({self.url!r})"


def _errors(raw: bytes) -> list[dict[str, Any]]:
    """SendGrid's ``errors`` list, or [] when the body is not in that shape."""
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return []
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _describe(error: dict[str, Any]) -> str:
    field, message = error.get("field"), error.get("message") or "error"
    return f"{field}: {message}" if field else str(message)


def _blamed(errors: list[dict[str, Any]], count: int) -> set[int] | None:
    """Indices of the personalizations the errors name; None unless every error names one."""
    blamed: set[int] = set()
    for error in errors:
        match = _PERSONALIZATION_FIELD.match(str(error.get("field") or ""))
        if match is None or int(match.group(1)) >= count:
            return None
        blamed.add(int(match.group(1)))
    return blamed
