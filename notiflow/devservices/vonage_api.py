"""A local stand-in for the Vonage (Nexmo) SMS API, ``/sms/json``, for tests and benchmarks.

Like Vonage it answers HTTP 200 whatever happens to the message: the outcome is the ``status``
of each entry in ``messages[]`` (one per concatenated part; "0" success, "2" missing parameter,
"3" invalid parameter, "4" bad credentials, ...). Accepts form, JSON or query parameters.
Lifecycle, recording and generic faults come from ``provider_api.ProviderApiServer``.
"""

from __future__ import annotations

import logging
import secrets
import threading

import orjson
from aiohttp import web

from connectors.sms.segments import count_segments
from notiflow.devservices.provider_api import ApiRequest, ProviderApiServer, Reply, json_reply

__all__ = ["ApiRequest", "VonageApi"]

log = logging.getLogger(__name__)

TEST_API_KEY = "notiflow-key"
TEST_API_SECRET = "notiflow-secret"
#: Default ``error-text`` for scripted rejections, by status.
ERROR_TEXTS = {
    "1": "Throughput Rate Exceeded - please wait [ 1000 ] and retry",
    "2": "Missing to param",
    "3": "Invalid to param",
    "4": "Bad Credentials",
    "5": "Internal Error",
    "6": "Unroutable message - rejected",
    "7": "Number barred",
    "8": "Partner account barred",
    "9": "Quota Exceeded - rejected",
    "15": "Illegal Sender Address - rejected",
    "29": "Non White-listed Destination - rejected",
}


class VonageApi(ProviderApiServer):
    """``POST /sms/json``: checks credentials and parameters, answers one entry per part.

    Precedence per request: the scripted queue (``reject_next``, ``throttle``, ``drop_next``,
    ``malformed_next``, ``script``), then credentials, then validation, then success.
    """

    NAME = "vonage-api"
    PRICE_PER_PART = "0.00680000"
    NETWORK = "23410"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str = TEST_API_KEY,
        api_secret: str = TEST_API_SECRET,
        balance: float = 1000.0,
        delay_seconds: float = 0.0,
    ) -> None:
        super().__init__(host, port, delay_seconds=delay_seconds)
        self.api_key, self.api_secret = api_key, api_secret
        self._balance = balance
        self._balance_lock = threading.Lock()

    def reject_next(
        self, status: str | int, error_text: str | None = None, *, times: int = 1
    ) -> None:
        """HTTP 200 whose single ``messages[]`` entry has this ``status`` (e.g. ``"6"``)."""
        code = str(status)
        self.push(_rejection(code, error_text or ERROR_TEXTS.get(code, "Rejected")), times)

    def throttle(self, *, times: int = 1) -> None:
        """Status "1" (throttled) for the next ``times`` requests."""
        self.reject_next("1", times=times)

    def _answer(self, request: web.Request, form: dict[str, str]) -> Reply:
        if request.path.rstrip("/") != "/sms/json":
            return json_reply(404, {"type": "not-found", "title": "Not Found"})
        if request.method not in ("GET", "POST"):
            return json_reply(405, {"type": "method-not-allowed", "title": "Method Not Allowed"})
        for name in ("api_key", "api_secret"):
            if not form.get(name):
                return _rejection("2", f"Missing {name}")
        if (form["api_key"], form["api_secret"]) != (self.api_key, self.api_secret):
            return _rejection("4", "Bad Credentials")
        for name in ("from", "to", "text"):
            if not form.get(name):
                return _rejection("2", f"Missing {name} param")
        to = form["to"]
        if not to.isdigit() or not 7 <= len(to) <= 15:
            return _rejection("3", "Invalid to param")
        if form.get("type", "text") not in ("text", "unicode", "binary", "wappush", "vcal"):
            return _rejection("3", "Invalid type param")
        parts = max(count_segments(form["text"]).segments, 1)
        messages = []
        for _ in range(parts):
            messages.append(
                {
                    "to": to,
                    "message-id": secrets.token_hex(8).upper(),
                    "status": "0",
                    "remaining-balance": self._charge(float(self.PRICE_PER_PART)),
                    "message-price": self.PRICE_PER_PART,
                    "network": self.NETWORK,
                    **({"client-ref": form["client-ref"]} if "client-ref" in form else {}),
                }
            )
        return Reply(
            200, orjson.dumps({"message-count": str(parts), "messages": messages}), accepted=True
        )

    def _charge(self, price: float) -> str:
        with self._balance_lock:
            self._balance -= price
            return f"{self._balance:.8f}"


def _rejection(status: str, error_text: str) -> Reply:
    return json_reply(
        200, {"message-count": "1", "messages": [{"status": status, "error-text": error_text}]}
    )
