"""A real HTTP server that records webhook calls: the local stand-in for a customer endpoint.

An ``aiohttp.web`` app on its own event loop in a background thread, on a loopback port the
OS picks (``server.AiohttpServer``). It checks Standard Webhooks signatures when given the
secret, and can be scripted to fail (status codes, ``Retry-After``, dropped connections,
latency) for tests and demos. The SendGrid, Mailgun, FCM and Web Push stand-ins are built on
it: they replace ``_answer`` (the normal answer) with their API's rules.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import web

from connectors.webhook.standard import verify
from notiflow.devservices.server import AiohttpServer, Reply, abort, retry_after_value

__all__ = ["ReceivedRequest", "Reply", "WebhookReceiver"]

OK = Reply(200, b'{"ok":true}')


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived, and what the receiver answered (0: connection dropped).

    ``json`` and ``signature_valid`` are computed on first access, keeping receiving cheap.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    peer: str = ""  # client "host:port": one value per connection
    secret: str | None = field(default=None, repr=False)
    tolerance_s: float = 300
    received_at: float = field(default_factory=time.time)

    @functools.cached_property
    def json(self) -> Any:
        """The parsed body; None when it is not JSON."""
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None

    @functools.cached_property
    def signature_valid(self) -> bool | None:
        """Standard Webhooks check at receipt time; None when the receiver has no secret."""
        if self.secret is None:
            return None
        return verify(self.secret, self.headers, self.body, self.tolerance_s, now=self.received_at)


def _encode_body(body: bytes | str | Mapping[str, Any] | None, status: int) -> bytes:
    if body is None:
        return OK.body if 200 <= status < 300 else orjson.dumps({"error": status})
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return orjson.dumps(body)


class WebhookReceiver(AiohttpServer[ReceivedRequest]):
    """Records every request; answers 200 ``{"ok": true}`` unless scripted otherwise.

    Precedence for each request: ``status_for_path`` rules, then the scripted queue, then
    ``_answer``. A request is recorded once the latency has passed; ``count`` is 2xx answers.
    """

    NAME = "webhook-receiver"
    CLIENT_MAX_SIZE = 8 * 1024 * 1024
    #: A scripted 2xx means "answer normally" (``_answer``) rather than "answer exactly this".
    SCRIPTED_SUCCESS_IS_NORMAL: ClassVar[bool] = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secret: str | None = None,
        delay_seconds: float = 0.0,
        tolerance_s: float = 300,
    ) -> None:
        super().__init__(host, port, delay_seconds=delay_seconds)
        self.secret = secret
        self.tolerance_s = tolerance_s
        self._path_status: dict[str, Reply] = {}

    def url(self, path: str = "/hook") -> str:
        return super().url(path)

    def clear(self) -> None:
        """Forget recorded requests, scripts and path rules."""
        super().clear()
        with self._cond:
            self._path_status.clear()

    # --- fault injection -----------------------------------------------------------------
    def script(self, statuses: Iterable[int]) -> None:
        """Answer the next requests with these statuses, in order (e.g. ``[500, 500, 200]``)."""
        for status in statuses:
            self._push(Reply(status, _encode_body(None, status)))

    def respond_with(
        self,
        status: int,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with this response."""
        self._push(Reply(status, _encode_body(body, status), dict(headers or {})), times)

    def throttle(self, retry_after: str | float = 1, *, times: int = 1) -> None:
        """Answer the next ``times`` requests with 429 and a ``Retry-After`` header."""
        headers = {"Retry-After": retry_after_value(retry_after)}
        self.respond_with(429, {"error": "rate_limited"}, headers, times=times)

    def status_for_path(
        self, path: str, status: int, body: bytes | str | Mapping[str, Any] | None = None
    ) -> None:
        """Always answer ``status`` on ``path`` (e.g. ``"/gone"`` → 410)."""
        with self._cond:
            self._path_status["/" + path.lstrip("/")] = Reply(status, _encode_body(body, status))

    # --- hooks for the stand-ins built on this ---------------------------------------------
    def _answer(self, request: web.Request, body: bytes) -> Reply:
        """The answer when nothing is scripted (called once the latency has passed)."""
        return OK

    def _on_accepted(self, request: web.Request, body: bytes) -> None:
        """A 2xx answer is going out for this request."""

    def _content_type(self, reply: Reply) -> str | None:
        """The ``Content-Type`` of ``reply`` unless its headers set one (None: no header)."""
        return "application/json"

    # --- server (background thread) ------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        scripted = self._next_scripted(request.path)
        if self.delay_seconds > 0:
            await asyncio.sleep(self.delay_seconds)
        if scripted is not None and scripted.drop:
            self._record(request, body, 0)
            abort(request)
        if scripted is None or self._is_normal(scripted):
            reply = self._answer(request, body)
        else:
            reply = scripted
        self._record(request, body, reply.status)
        if 200 <= reply.status < 300:
            self._on_accepted(request, body)
        return self.respond(reply, self._content_type(reply))

    def _is_normal(self, scripted: Reply) -> bool:
        """Whether ``_answer`` answers a request this reply was scripted for."""
        success = 200 <= scripted.status < 300
        return scripted.normal or (self.SCRIPTED_SUCCESS_IS_NORMAL and success)

    def _next_scripted(self, path: str) -> Reply | None:
        with self._cond:
            if path in self._path_status:
                return self._path_status[path]
        return self._next_fault()

    def _record(self, request: web.Request, body: bytes, status: int) -> None:
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer = f"{peername[0]}:{peername[1]}" if peername else ""
        headers = dict(request.headers)
        entry = ReceivedRequest(
            request.method, request.path, headers, body, status, peer, self.secret, self.tolerance_s
        )
        self._store(entry, 200 <= status < 300)
