"""A generic provider-API stand-in: an aiohttp server in a background thread on a free
loopback port that records requests and answers scripted faults. Provider stand-ins
(``TwilioApi``, ``VonageApi``) subclass ``ProviderApiServer`` and implement the API shape.

Lifecycle, recording and the fault queue come from ``server.AiohttpServer``; what is particular
here: a request is recorded on arrival (a client that times out still shows up), ``count`` is
requests that created a message or call (``Reply.accepted``), and a scripted reply may be
``NORMAL`` (answer as the API would), optionally late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from notiflow.devservices.server import AiohttpServer, Reply, abort, basic_auth

__all__ = ["NORMAL", "ApiRequest", "ProviderApiServer", "Reply", "basic_auth", "json_reply"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiRequest:
    """One request as it arrived: ``form`` merges query, form or JSON fields. ``status`` 0:
    the connection was dropped; ``accepted``: a message or call was created."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str]
    status: int
    accepted: bool = False
    received_at: float = field(default_factory=time.time)

    @property
    def auth(self) -> tuple[str, str] | None:
        """HTTP Basic ``(user, password)``, or None."""
        return basic_auth(self.headers.get("Authorization", ""))


NORMAL = Reply(normal=True)


def json_reply(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON answer (for ``push``: any body a test wants the server to return)."""
    return Reply(status, orjson.dumps(payload), dict(headers or {}))


class ProviderApiServer(AiohttpServer[ApiRequest]):
    """Background-thread aiohttp server: recording, scripted faults, latency. Subclasses
    implement ``_answer`` (the normal behaviour) and ``_error`` (a provider error body)."""

    NAME = "provider-api"

    # --- fault injection -----------------------------------------------------------------
    def push(self, reply: Reply, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``reply``."""
        self._push(reply, times)

    def script(self, statuses: Iterable[int]) -> None:
        """Answer the next requests with these HTTP statuses (2xx: answer normally)."""
        for status in statuses:
            self.push(NORMAL if 200 <= status < 300 else self._error(status))

    def malformed_next(self, times: int = 1, status: int = 200) -> None:
        """Answer ``status`` with a body that is not JSON (a proxy's HTML page)."""
        self.push(Reply(status, b"<html><body>Bad Gateway", {"Content-Type": "text/html"}), times)

    def slow_next(self, seconds: float, times: int = 1) -> None:
        """Answer the next ``times`` requests normally, ``seconds`` late."""
        self.push(Reply(delay=seconds, normal=True), times)

    # --- provider hooks --------------------------------------------------------------------
    def _answer(self, request: web.Request, form: dict[str, str]) -> Reply:
        raise NotImplementedError

    def _error(self, status: int) -> Reply:
        return json_reply(status, {"error": HTTPStatus(status).phrase})

    # --- server (background thread) ------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        form = _fields(request, body)
        scripted = self._next_fault() or NORMAL
        reply = self._answer(request, form) if scripted.normal else scripted
        entry = ApiRequest(
            request.method, request.path, dict(request.headers), body, form, reply.status,
            reply.accepted,
        )  # fmt: skip
        self._store(entry, reply.accepted)  # on arrival: a client that times out still shows up
        delay = self.delay_seconds + scripted.delay
        if delay > 0:
            await asyncio.sleep(delay)
        if reply.drop:
            abort(request)
        return self.respond(reply)


def _fields(request: web.Request, body: bytes) -> dict[str, str]:
    fields = dict(request.query)
    if body and request.content_type == "application/json":
        with contextlib.suppress(orjson.JSONDecodeError):
            payload = orjson.loads(body)
            if isinstance(payload, dict):
                fields.update({str(k): str(v) for k, v in payload.items()})
    elif body:
        fields.update(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return fields
