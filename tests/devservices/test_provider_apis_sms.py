"""The local Twilio and Vonage API stand-ins, spoken to with plain HTTP clients."""

from __future__ import annotations

import asyncio
import base64
import http.client
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest

from notiflow.devservices.twilio_api import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TwilioApi
from notiflow.devservices.vonage_api import TEST_API_KEY, TEST_API_SECRET, VonageApi
from tests.devservices.helpers import post as http_post

MESSAGES = f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"
CALLS = f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Calls.json"
AUTH = "Basic " + base64.b64encode(f"{TEST_ACCOUNT_SID}:{TEST_AUTH_TOKEN}".encode()).decode()
SMS = {"To": "+14155550100", "From": "+15005550006", "Body": "Hello"}
TWIML = '<Response><Say language="en-US">Hello</Say></Response>'
CALL = {"To": "+14155550100", "From": "+15005550006", "Twiml": TWIML}
VONAGE = {"api_key": TEST_API_KEY, "api_secret": TEST_API_SECRET}
VONAGE |= {"from": "Acme", "to": "447700900123", "text": "Hi"}


def post(
    url: str, fields: dict[str, str] | None = None, *, auth: str | None = AUTH, method: str = "POST"
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, parsed JSON or raw bytes) of one request; HTTP errors are answers."""
    data = urlencode(fields).encode() if fields is not None else None
    sent = {"Content-Type": "application/x-www-form-urlencoded"} if data is not None else {}
    if auth:
        sent["Authorization"] = auth
    status, headers, body = http_post(url, data, sent, method=method)
    try:
        return status, headers, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, headers, body


@pytest.fixture
def twilio() -> Iterator[TwilioApi]:
    with TwilioApi() as api:
        yield api


@pytest.fixture
def vonage() -> Iterator[VonageApi]:
    with VonageApi() as api:
        yield api


# --- lifecycle -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [TwilioApi, VonageApi])
def test_lifecycle_is_bounded_and_frees_the_port(kind: type[TwilioApi] | type[VonageApi]) -> None:
    started = time.monotonic()
    server = kind().start()
    assert server.start() is server  # idempotent
    port = server.port
    assert port > 0
    assert server.base_url == f"http://127.0.0.1:{port}"
    assert server.url("/sms/json") == f"http://127.0.0.1:{port}/sms/json"
    server.stop()
    server.stop()  # idempotent
    assert time.monotonic() - started < 5
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # released


def test_start_error_is_raised() -> None:
    with TwilioApi() as first, pytest.raises(OSError):
        TwilioApi(port=first.port).start()


# --- Twilio ----------------------------------------------------------------------------------
def test_twilio_message_created(twilio: TwilioApi) -> None:
    status, _, body = post(twilio.url(MESSAGES), SMS)
    assert status == 201
    assert re.fullmatch(r"SM[0-9a-f]{32}", body["sid"])
    assert body["account_sid"] == TEST_ACCOUNT_SID
    assert (body["to"], body["from"], body["body"]) == (SMS["To"], SMS["From"], SMS["Body"])
    assert (body["status"], body["num_segments"], body["direction"]) == (
        "queued",
        "1",
        "outbound-api",
    )
    assert body["uri"] == f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages/{body['sid']}.json"
    assert twilio.wait_for(1, timeout=1)
    request = twilio.received[0]
    assert (request.form, request.auth, request.status, request.accepted) == (
        SMS,
        (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN),
        201,
        True,
    )


def test_twilio_call_created(twilio: TwilioApi) -> None:
    status, _, body = post(twilio.url(CALLS), CALL)
    assert status == 201
    assert re.fullmatch(r"CA[0-9a-f]{32}", body["sid"])
    assert (body["status"], body["to"]) == ("queued", CALL["To"])
    assert twilio.count == 1


@pytest.mark.parametrize(
    ("auth", "status", "code"),
    [
        (None, 401, 20003),
        ("Basic " + base64.b64encode(f"{TEST_ACCOUNT_SID}:nope".encode()).decode(), 401, 20003),
        ("Bearer abc", 401, 20003),
    ],
)
def test_twilio_auth_refused(twilio: TwilioApi, auth: str | None, status: int, code: int) -> None:
    got, headers, body = post(twilio.url(MESSAGES), SMS, auth=auth)
    assert (got, body["code"], body["status"]) == (status, code, status)
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert twilio.count == 0


def test_twilio_other_account_and_paths(twilio: TwilioApi) -> None:
    other = MESSAGES.replace(TEST_ACCOUNT_SID, "AC" + "f" * 32)
    assert post(twilio.url(other), SMS)[2]["code"] == 20003
    assert post(twilio.url("/2010-04-01/Accounts/x/Nope.json"), SMS)[0] == 404
    assert post(twilio.url(MESSAGES), method="GET")[0] == 405


SMS_PROBLEMS = [
    ({"To": ""}, 21604),
    ({"From": ""}, 21603),
    ({"Body": ""}, 21602),
    ({"Body": "x" * 1601}, 21617),
    ({"To": "+15005550001"}, 21211),
    ({"To": "+15005550002"}, 21612),
    ({"To": "+15005550003"}, 21408),
    ({"To": "+15005550004"}, 21610),
    ({"To": "+15005550009"}, 21614),
    ({"To": "not a number"}, 21211),
    ({"From": "+15005550001"}, 21212),
    ({"From": "+15005550007"}, 21606),
    ({"From": "+15005550008"}, 21611),
]


@pytest.mark.parametrize(("change", "code"), SMS_PROBLEMS, ids=[str(c) for _, c in SMS_PROBLEMS])
def test_twilio_message_validation(twilio: TwilioApi, change: dict[str, str], code: int) -> None:
    status, _, body = post(twilio.url(MESSAGES), SMS | change)
    assert (status, body["code"], body["status"]) == (400, code, 400)
    assert body["message"]
    assert twilio.count == 0


CALL_PROBLEMS = [
    ({"To": ""}, 21201),
    ({"From": ""}, 21213),
    ({"Twiml": ""}, 21200),
    ({"Twiml": "<Response><Say>" + "a" * 4000 + "</Say></Response>"}, 32018),
    ({"Twiml": "<Response><Say>unclosed"}, 12100),
    ({"To": "+15005550001"}, 21217),
    ({"To": "+15005550002"}, 21214),
    ({"To": "+15005550004"}, 21216),
]


@pytest.mark.parametrize(("change", "code"), CALL_PROBLEMS, ids=[str(c) for _, c in CALL_PROBLEMS])
def test_twilio_call_validation(twilio: TwilioApi, change: dict[str, str], code: int) -> None:
    status, _, body = post(twilio.url(CALLS), CALL | change)
    assert (status, body["code"]) == (400, code)


def test_twilio_faults(twilio: TwilioApi) -> None:
    twilio.script([500, 201])
    twilio.throttle(2.5)
    twilio.fail_next(400, 21610, "Unsubscribed")
    status, _, body = post(twilio.url(MESSAGES), SMS)
    assert (status, body["code"]) == (500, 20500)
    assert post(twilio.url(MESSAGES), SMS)[0] == 201  # scripted 2xx: answered normally
    status, headers, body = post(twilio.url(MESSAGES), SMS)
    assert (status, body["code"], headers["Retry-After"]) == (429, 20429, "2.5")
    status, _, body = post(twilio.url(MESSAGES), SMS)
    assert (status, body["code"], body["message"]) == (400, 21610, "Unsubscribed")
    twilio.malformed_next(status=201)
    status, _, body = post(twilio.url(MESSAGES), SMS)
    assert status == 201
    assert isinstance(body, bytes)
    assert body.startswith(b"<html>")
    twilio.drop_next()
    with pytest.raises((http.client.RemoteDisconnected, urllib.error.URLError, ConnectionError)):
        post(twilio.url(MESSAGES), SMS)
    assert [r.status for r in twilio.received] == [500, 201, 429, 400, 201, 0]
    assert twilio.count == 1  # only the normally answered request created a message
    twilio.clear()
    assert (twilio.received, twilio.count) == ([], 0)


def test_twilio_latency(twilio: TwilioApi) -> None:
    twilio.slow_next(0.3)
    started = time.monotonic()
    assert post(twilio.url(MESSAGES), SMS)[0] == 201
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert post(twilio.url(MESSAGES), SMS)[0] == 201
    assert time.monotonic() - started < 0.3


def test_twilio_serves_concurrent_requests_fast() -> None:
    n, concurrency = 400, 50
    with TwilioApi(delay_seconds=0.05) as api:

        async def burst() -> list[int]:
            gate = asyncio.Semaphore(concurrency)
            headers = {"Authorization": AUTH}
            async with aiohttp.ClientSession(headers=headers) as session:

                async def one() -> int:
                    async with gate, session.post(api.url(MESSAGES), data=SMS) as response:
                        await response.read()
                        return response.status

                return await asyncio.gather(*(one() for _ in range(n)))

        started = time.monotonic()
        statuses = asyncio.run(asyncio.wait_for(burst(), 30))
        elapsed = time.monotonic() - started
        assert statuses == [201] * n
        assert api.count == n
        assert len({r.form["Body"] for r in api.received}) == 1
    # 400 requests × 50 ms at concurrency 50 is 0.4 s when served concurrently (serial: 20 s)
    assert elapsed < 5, elapsed


# --- Vonage ----------------------------------------------------------------------------------
def test_vonage_message_accepted(vonage: VonageApi) -> None:
    status, _, body = post(vonage.url("/sms/json"), VONAGE | {"client-ref": "n-1"}, auth=None)
    assert status == 200
    assert body["message-count"] == "1"
    (message,) = body["messages"]
    assert message["status"] == "0"
    assert re.fullmatch(r"[0-9A-F]{16}", message["message-id"])
    assert (message["to"], message["client-ref"]) == ("447700900123", "n-1")
    assert message["message-price"] == VonageApi.PRICE_PER_PART
    assert float(message["remaining-balance"]) < 1000
    assert vonage.count == 1
    assert vonage.received[0].form["text"] == "Hi"


def test_vonage_json_and_query_parameters(vonage: VonageApi) -> None:
    request = urllib.request.Request(
        vonage.url("/sms/json"),
        data=orjson.dumps(VONAGE),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert orjson.loads(response.read())["messages"][0]["status"] == "0"
    status, _, body = post(vonage.url("/sms/json?" + urlencode(VONAGE)), None, method="GET")
    assert (status, body["messages"][0]["status"]) == (200, "0")
    assert vonage.count == 2


def test_vonage_unicode_multipart_and_balance(vonage: VonageApi) -> None:
    text = "Ж" * 100  # UCS-2: 2 parts of 67
    _, _, body = post(vonage.url("/sms/json"), VONAGE | {"text": text, "type": "unicode"})
    assert body["message-count"] == "2"
    balances = [float(m["remaining-balance"]) for m in body["messages"]]
    assert balances[0] > balances[1]
    assert len({m["message-id"] for m in body["messages"]}) == 2


VONAGE_PROBLEMS = [
    ({"api_key": ""}, "2", "Missing api_key"),
    ({"api_secret": ""}, "2", "Missing api_secret"),
    ({"api_secret": "wrong"}, "4", "Bad Credentials"),
    ({"from": ""}, "2", "Missing from param"),
    ({"to": ""}, "2", "Missing to param"),
    ({"text": ""}, "2", "Missing text param"),
    ({"to": "+447700900123"}, "3", "Invalid to param"),
    ({"type": "fancy"}, "3", "Invalid type param"),
]


@pytest.mark.parametrize(
    ("change", "code", "text"), VONAGE_PROBLEMS, ids=[f"{c}-{t}" for _, c, t in VONAGE_PROBLEMS]
)
def test_vonage_validation(vonage: VonageApi, change: dict[str, str], code: str, text: str) -> None:
    status, _, body = post(vonage.url("/sms/json"), VONAGE | change, auth=None)
    assert status == 200  # Vonage reports problems in the body
    assert body["messages"] == [{"status": code, "error-text": text}]
    assert vonage.count == 0


def test_vonage_faults(vonage: VonageApi) -> None:
    vonage.reject_next("6")
    vonage.throttle()
    vonage.script([503])
    assert post(vonage.url("/sms/json"), VONAGE)[2]["messages"][0]["status"] == "6"
    assert post(vonage.url("/sms/json"), VONAGE)[2]["messages"][0]["status"] == "1"
    assert post(vonage.url("/sms/json"), VONAGE)[0] == 503
    assert post(vonage.url("/elsewhere"), VONAGE)[0] == 404
    assert [r.status for r in vonage.received] == [200, 200, 503, 404]
    assert vonage.count == 0
