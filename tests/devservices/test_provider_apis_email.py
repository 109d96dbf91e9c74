"""The SendGrid and Mailgun stand-ins, driven with stdlib clients (no connector involved)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from notiflow.devservices.mailgun_api import MailgunApi, parse_form
from notiflow.devservices.sendgrid_api import SendGridApi
from tests.devservices.helpers import port_is_open, post

SG_KEY = "SG.devservices"
MG_KEY = "key-devservices"
MG_DOMAIN = "mg.devservices.org"


def mail(personalizations: list[dict] | None = None, **overrides: object) -> bytes:
    message: dict[str, object] = {
        "personalizations": personalizations or [{"to": [{"email": "bob@example.org"}]}],
        "from": {"email": "shop@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Hello"}],
    }
    message.update(overrides)
    return json.dumps(message).encode()


SG_HEADERS = {"Authorization": f"Bearer {SG_KEY}", "Content-Type": "application/json"}


@pytest.fixture
def sendgrid() -> Iterator[SendGridApi]:
    with SendGridApi(SG_KEY) as api:
        yield api


@pytest.fixture
def mailgun() -> Iterator[MailgunApi]:
    with MailgunApi(MG_KEY, MG_DOMAIN) as api:
        yield api


# --- SendGridApi ------------------------------------------------------------------------------
def test_sendgrid_lifecycle() -> None:
    api = SendGridApi(SG_KEY).start()
    try:
        assert api.port > 0 and port_is_open(api.port)
        assert api.base_url == f"http://127.0.0.1:{api.port}"
    finally:
        api.stop()
    assert not port_is_open(api.port)
    api.stop()  # idempotent


def test_sendgrid_accepts_and_counts_personalizations(sendgrid: SendGridApi) -> None:
    people = [{"to": [{"email": f"u{i}@example.org"}]} for i in range(3)]
    status, headers, body = post(f"{sendgrid.base_url}/v3/mail/send", mail(people), SG_HEADERS)
    assert (status, body) == (202, b"")
    assert len(headers["X-Message-Id"]) == 22
    assert sendgrid.count == 1 and sendgrid.messages == 3
    assert sendgrid.wait_for_messages(3, timeout=1)
    assert sendgrid.received[0].json["subject"] == "Hi"
    sendgrid.clear()
    assert (sendgrid.count, sendgrid.messages, sendgrid.received) == (0, 0, [])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (mail([{"to": []}]), "personalizations.0.to"),
        (mail([{"to": [{"email": "nobody"}]}]), "personalizations.0.to.0.email"),
        (
            mail([{"to": [{"email": "a@x.org"}]}, {"to": [{"email": "A@x.org"}]}]),
            "personalizations.1",
        ),
        (mail([{"to": [{"email": "a@x.org"}], "custom_args": {"n": 1}}]), "personalizations.0"),
        (mail(personalizations=None, subject=""), "subject"),
        (mail(content=[]), "content"),
        (mail(content=[{"type": "text/plain", "value": ""}]), "content.0.value"),
        (mail(**{"from": {"email": "nope"}}), "from.email"),
        (mail([{"to": [{"email": f"u{i}@x.org"}]} for i in range(1001)]), "personalizations"),
    ],
    ids=[
        "no_to",
        "bad_email",
        "duplicate",
        "custom_args_not_strings",
        "no_subject",
        "no_content",
        "empty_content",
        "bad_from",
        "too_many",
    ],
)
def test_sendgrid_validation_errors(sendgrid: SendGridApi, body: bytes, field: str) -> None:
    status, _, raw = post(f"{sendgrid.base_url}/v3/mail/send", body, SG_HEADERS)
    assert status == 400
    (error,) = json.loads(raw)["errors"]
    assert error["field"].startswith(field) and error["message"]
    assert sendgrid.count == 0


def test_sendgrid_auth_path_and_json(sendgrid: SendGridApi) -> None:
    url = f"{sendgrid.base_url}/v3/mail/send"
    wrong = {**SG_HEADERS, "Authorization": "Bearer SG.other"}
    assert post(url, mail(), wrong)[0] == 401
    assert post(url, mail(), {"Content-Type": "application/json"})[0] == 401
    assert post(url, b"{not json", SG_HEADERS)[0] == 400
    assert post(url, mail(), {**SG_HEADERS, "Content-Type": "text/plain"})[0] == 400
    assert post(f"{sendgrid.base_url}/v3/other", mail(), SG_HEADERS)[0] == 404


def test_sendgrid_faults(sendgrid: SendGridApi) -> None:
    url = f"{sendgrid.base_url}/v3/mail/send"
    sendgrid.script([500, 202])
    sendgrid.throttle(30)
    sendgrid.reject_address("bad@example.org", "blocked")
    status, _, body = post(url, mail(), SG_HEADERS)
    assert status == 500 and json.loads(body)["errors"][0]["message"] == "scripted 500"
    assert post(url, mail(), SG_HEADERS)[0] == 202
    status, headers, body = post(url, mail(), SG_HEADERS)
    assert status == 429 and json.loads(body)["errors"][0]["message"] == "too many requests"
    assert float(headers["X-RateLimit-Reset"]) == pytest.approx(time.time() + 30, abs=2)
    people = [{"to": [{"email": "ok@example.org"}]}, {"to": [{"email": "bad@example.org"}]}]
    status, _, body = post(url, mail(people), SG_HEADERS)
    assert status == 400
    assert json.loads(body)["errors"][0] == {
        "message": "blocked",
        "field": "personalizations.1.to.0.email",
        "help": None,
    }
    sendgrid.drop_next()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(urllib.request.Request(url, mail(), SG_HEADERS), timeout=5)
    assert [r.status for r in sendgrid.received] == [500, 202, 429, 400, 0]


def test_sendgrid_latency() -> None:
    with SendGridApi(SG_KEY, delay_seconds=0.3) as api:
        started = time.monotonic()
        assert post(f"{api.base_url}/v3/mail/send", mail(), SG_HEADERS)[0] == 202
        assert time.monotonic() - started >= 0.3


# --- MailgunApi -------------------------------------------------------------------------------
def mg_headers(key: str = MG_KEY) -> dict[str, str]:
    token = base64.b64encode(f"api:{key}".encode()).decode()
    return {
        "Authorization": f"Basic {token}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def form(**fields: str) -> bytes:
    values = {"from": f"a@{MG_DOMAIN}", "to": "b@example.org", "subject": "Hi", "text": "Yo"}
    values.update(fields)
    return urllib.parse.urlencode({k: v for k, v in values.items() if v is not None}).encode()


def test_mailgun_accepts_and_records(mailgun: MailgunApi) -> None:
    url = f"{mailgun.base_url}/v3/{MG_DOMAIN}/messages"
    status, headers, body = post(url, form(**{"v:notification_id": "n1"}), mg_headers())
    reply = json.loads(body)
    assert status == 200 and reply["message"] == "Queued. Thank you."
    assert reply["id"].startswith("<") and reply["id"].endswith(f"@{MG_DOMAIN}>")
    assert headers["Content-Type"].startswith("application/json")
    assert mailgun.wait_for(1, timeout=1) and mailgun.count == 1
    assert mailgun.form(mailgun.received[0])["v:notification_id"] == ["n1"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"from": ""}, "'from' parameter is missing"),
        ({"to": ""}, "'to' parameter is missing"),
        ({"text": ""}, "Need at least one of 'text', 'html' or 'template'"),
        ({"to": "nobody"}, "to parameter is not a valid address"),
    ],
    ids=["no_from", "no_to", "no_body", "bad_to"],
)
def test_mailgun_validation(mailgun: MailgunApi, fields: dict[str, str], message: str) -> None:
    url = f"{mailgun.base_url}/v3/{MG_DOMAIN}/messages"
    status, _, body = post(url, form(**fields), mg_headers())
    assert status == 400 and json.loads(body)["message"].startswith(message)


def test_mailgun_auth_and_domain(mailgun: MailgunApi) -> None:
    url = f"{mailgun.base_url}/v3/{MG_DOMAIN}/messages"
    status, headers, body = post(url, form(), mg_headers("key-wrong"))
    assert (status, body) == (401, b"Forbidden")
    assert headers["Content-Type"].startswith("text/plain")
    assert post(url, form(), {"Authorization": "Bearer x"})[0] == 401
    status, _, body = post(f"{mailgun.base_url}/v3/other.org/messages", form(), mg_headers())
    assert status == 404 and "Domain not found" in json.loads(body)["message"]
    assert post(f"{mailgun.base_url}/v3/{MG_DOMAIN}/events", form(), mg_headers())[0] == 404


def test_mailgun_faults(mailgun: MailgunApi) -> None:
    url = f"{mailgun.base_url}/v3/{MG_DOMAIN}/messages"
    mailgun.script([503])
    mailgun.throttle(4)
    assert post(url, form(), mg_headers())[0] == 503
    status, headers, _ = post(url, form(), mg_headers())
    assert status == 429 and headers["Retry-After"] == "4"
    assert float(headers["X-RateLimit-Reset"]) == pytest.approx((time.time() + 4) * 1000, abs=2e3)
    assert post(url, form(), mg_headers())[0] == 200


def test_parse_form_both_encodings() -> None:
    assert parse_form("application/x-www-form-urlencoded", b"to=a%40b.org&to=c%40d.org") == {
        "to": ["a@b.org", "c@d.org"]
    }
    multipart = (
        b'--b\r\nContent-Disposition: form-data; name="subject"\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n'
        b'--b\r\nContent-Disposition: form-data; name="h:X-Tag"\r\n\r\nv\r\n--b--\r\n'
    )
    assert parse_form("multipart/form-data; boundary=b", multipart) == {
        "subject": ["Grüße"],
        "h:X-Tag": ["v"],
    }


# --- the email benchmark, smoke mode (servers in child processes; no timing assertions) --------
def test_email_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.email_bench import main

    args = ["--requests", "30", "--messages", "30", "--concurrency", "4", "--pool", "2"]
    assert main([*args, "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "sendgrid: 30 sends" in out and "mailgun: 30 sends" in out and "smtp: 30" in out
    assert "PIPELINING offered, RTT +0 ms" in out and "CPU per message" in out
    smtp = ["smtp", "--messages", "10", "--pool", "2", "--repeat", "1", "--no-pipelining"]
    assert main([*smtp, "--rtt-ms", "4"]) == 0
    assert "smtp: 10 messages, pool 2, no PIPELINING, RTT +4 ms" in capsys.readouterr().out
