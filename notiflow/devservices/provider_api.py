"""A generic provider-API stand-in: an aiohttp server in a background thread on a free
loopback port that records requests and answers scripted faults. Provider stand-ins
(``TwilioApi``, ``VonageApi``) subclass ``ProviderApiServer`` and implement the API shape."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

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


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server answers to one request (``drop``: close the connection instead)."""

    status: int = 200
    body: bytes = b"{}"
    headers: Mapping[str, str] = field(default_factory=dict)
    accepted: bool = False
    drop: bool = False
    delay: float = 0.0
    normal: bool = False  # scripted "answer as the API would" (possibly ``delay`` late)


NORMAL = Reply(normal=True)


def basic_auth(header: str) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic ...`` header, or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def json_reply(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON answer (for ``push``: any body a test wants the server to return)."""
    return Reply(status, orjson.dumps(payload), dict(headers or {}))


class ProviderApiServer:
    """Background-thread aiohttp server: recording, scripted faults, latency. Subclasses
    implement ``_answer`` (the normal behaviour) and ``_error`` (a provider error body)."""

    START_TIMEOUT_S = 5.0
    STOP_TIMEOUT_S = 5.0
    SHUTDOWN_GRACE_S = 1.0
    NAME = "provider-api"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, delay_seconds: float = 0.0
    ) -> None:
        self.host, self.port, self.delay_seconds = host, port, delay_seconds
        self._cond = threading.Condition()
        self._received: list[ApiRequest] = []
        self._accepted = 0
        self._script: deque[Reply] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> Self:
        """Serve in a background thread; returns once listening (bounded by START_TIMEOUT_S)."""
        if self._thread is not None:
            return self
        self._loop, ready = asyncio.new_event_loop(), Future[None]()
        self._thread = threading.Thread(
            target=self._run, args=(self._loop, ready), name=self.NAME, daemon=True
        )
        self._thread.start()
        try:
            ready.result(self.START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        log.info("%s listening on %s", self.NAME, self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (bounded by STOP_TIMEOUT_S)."""
        thread, loop, self._thread = self._thread, self._loop, None
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may have closed already
            loop.call_soon_threadsafe(loop.stop)
        thread.join(self.STOP_TIMEOUT_S)
        if thread.is_alive():
            log.warning("%s on port %s did not stop in time", self.NAME, self.port)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "") -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # --- what was received ---------------------------------------------------------------
    @property
    def received(self) -> list[ApiRequest]:
        with self._cond:
            return list(self._received)

    @property
    def count(self) -> int:
        """Requests that created a message or call."""
        with self._cond:
            return self._accepted

    def wait_for(self, n: int, timeout: float) -> bool:
        """Block until ``count >= n``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._accepted >= n, timeout)

    def clear(self) -> None:
        """Forget recorded requests and scripted replies."""
        with self._cond:
            self._received.clear()
            self._accepted = 0
            self._script.clear()

    # --- fault injection -----------------------------------------------------------------
    def push(self, reply: Reply, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``reply``."""
        with self._cond:
            self._script.extend([reply] * times)

    def script(self, statuses: Iterable[int]) -> None:
        """Answer the next requests with these HTTP statuses (2xx: answer normally)."""
        for status in statuses:
            self.push(NORMAL if 200 <= status < 300 else self._error(status))

    def drop_next(self, times: int = 1) -> None:
        """Close the connection without answering the next ``times`` requests."""
        self.push(Reply(0, b"", drop=True), times)

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
    def _run(self, loop: asyncio.AbstractEventLoop, ready: Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            runner = loop.run_until_complete(self._serve())
        except BaseException as error:
            ready.set_exception(error)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            pending = asyncio.all_tasks(loop)  # handlers still sleeping (scripted latency)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    async def _serve(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.SHUTDOWN_GRACE_S, handle_signals=False
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        return runner

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        form = _fields(request, body)
        with self._cond:
            scripted = self._script.popleft() if self._script else NORMAL
        reply = self._answer(request, form) if scripted.normal else scripted
        entry = ApiRequest(
            request.method, request.path, dict(request.headers), body, form, reply.status,
            reply.accepted,
        )  # fmt: skip
        with self._cond:  # recorded on arrival: a client that times out still shows up
            self._received.append(entry)
            self._accepted += reply.accepted
            self._cond.notify_all()
        delay = self.delay_seconds + scripted.delay
        if delay > 0:
            await asyncio.sleep(delay)
        if reply.drop:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp: no response on an aborted connection
        headers = {"Content-Type": "application/json", **reply.headers}
        return web.Response(status=reply.status, body=reply.body, headers=headers)


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


# --- Twilio ---------------------------------------------------------------------------------
