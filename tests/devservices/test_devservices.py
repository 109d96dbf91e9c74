"""The local stand-in servers, driven with stdlib clients (no notiflow connector involved)."""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from email.message import EmailMessage

import pytest
import redis

from connectors.webhook.standard import sign
from notiflow.devservices import RedisServer, SmtpCatcher, WebhookReceiver, free_port
from tests.devservices.helpers import port_is_open, post

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLWRldnNlcnZpY2Vz"


def simple_message(to: str = "bob@example.org") -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "ann@example.org", to, "Hi"
    message.set_content("Hello Bob")
    return message


# --- ports ------------------------------------------------------------------------------------
def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535


# --- RedisServer ------------------------------------------------------------------------------
def test_redis_server_answers_ping_and_stops() -> None:
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        try:
            assert client.ping() is True
            client.set("k", "v")
            assert client.get("k") == b"v"
            assert client.config_get("save")["save"] == ""
            assert client.config_get("appendonly")["appendonly"] == "no"
        finally:
            client.close()
        port = server.port
    assert not server.running
    assert not port_is_open(port)


# --- SmtpCatcher ------------------------------------------------------------------------------
def test_smtp_catcher_stores_messages_and_injects_faults() -> None:
    threads_before = threading.active_count()
    with SmtpCatcher() as catcher, smtplib.SMTP(catcher.host, catcher.port, timeout=5) as client:
        client.send_message(simple_message())
        catcher.fail_next(1, 451, "Try again later")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(simple_message())
        assert refused.value.recipients["bob@example.org"][0] == 451
        catcher.fail_next(1, 554, "No thanks", command="data")
        with pytest.raises(smtplib.SMTPDataError) as data_error:
            client.send_message(simple_message())
        assert data_error.value.smtp_code == 554
        catcher.refuse("gone@example.org", 550)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(simple_message("gone@example.org"))
        client.send_message(simple_message())

        assert catcher.wait_for(2, timeout=5)
        assert not catcher.wait_for(3, timeout=0.05)
        assert catcher.count == 2 and catcher.connections == 1
        first = catcher.messages[0]
        assert first.mail_from == "ann@example.org"
        assert first.rcpt_tos == ("bob@example.org",)
        assert first.message["Subject"] == "Hi"
        assert first.message.get_content().strip() == "Hello Bob"
        port = catcher.port
    assert not port_is_open(port)
    assert threading.active_count() == threads_before


def test_smtp_catcher_drop_connections() -> None:
    with SmtpCatcher() as catcher:
        client = smtplib.SMTP(catcher.host, catcher.port, timeout=5)
        client.ehlo()
        assert catcher.drop_connections() == 1
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
        client.close()


def test_smtp_catcher_starttls_and_auth() -> None:
    with SmtpCatcher(tls=True, username="u", password="p") as catcher:
        with smtplib.SMTP(catcher.host, catcher.port, timeout=5) as client:
            client.starttls(context=ssl._create_unverified_context())
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("u", "wrong")
            client.login("u", "p")
            client.send_message(simple_message())
        with smtplib.SMTP(catcher.host, catcher.port, timeout=5) as anonymous:
            anonymous.starttls(context=ssl._create_unverified_context())
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                anonymous.send_message(simple_message())
            assert refused.value.smtp_code == 530
        assert catcher.wait_for(1, timeout=5) and catcher.count == 1


# --- WebhookReceiver --------------------------------------------------------------------------
def test_webhook_receiver_records_and_verifies() -> None:
    threads_before = threading.active_count()
    with WebhookReceiver(secret=SECRET) as receiver:
        body = json.dumps({"hello": "world"}).encode()
        timestamp = int(time.time())
        signed = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(SECRET, "msg_1", timestamp, body),
            "Content-Type": "application/json",
        }
        status, _, answer = post(receiver.url("/in"), body, signed)
        assert (status, json.loads(answer)) == (200, {"ok": True})
        status, _, _ = post(receiver.url("/in"), b'{"hello": "forged"}', signed)
        assert status == 200  # the receiver records, it does not reject
        assert receiver.wait_for(2, timeout=5)
        good, forged = receiver.received
        assert (good.path, good.json, good.signature_valid) == ("/in", {"hello": "world"}, True)
        assert forged.signature_valid is False
        port = receiver.port
    assert not port_is_open(port)
    assert threading.active_count() == threads_before


def test_webhook_receiver_scripts_and_faults() -> None:
    with WebhookReceiver() as receiver:
        receiver.script([500, 503])
        receiver.throttle(12)
        receiver.respond_with(418, "teapot", {"X-Why": "because"})
        receiver.drop_next()
        receiver.status_for_path("/gone", 410)
        results = [post(receiver.url())[0] for _ in range(3)]
        _, headers, _ = post(receiver.url())
        results.append(headers)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            post(receiver.url())
        gone, normal = post(receiver.url("/gone"))[0], post(receiver.url())[0]

        assert results[:3] == [500, 503, 429]
        assert results[3]["X-Why"] == "because"
        assert (gone, normal) == (410, 200)
        assert [r.status for r in receiver.received] == [500, 503, 429, 418, 0, 410, 200]
        assert receiver.count == 1
        assert all(r.signature_valid is None for r in receiver.received)  # no secret given


def test_webhook_receiver_retry_after_and_delay() -> None:
    with WebhookReceiver(delay_seconds=0.3) as receiver:
        receiver.throttle(7)
        started = time.monotonic()
        status, headers, _ = post(receiver.url())
        assert time.monotonic() - started >= 0.3
        assert (status, headers["Retry-After"]) == (429, "7")
        receiver.clear()
        assert receiver.received == [] and receiver.count == 0


# --- the connector benchmark, smoke mode (no timing assertions) ----------------------------------
def test_connectors_bench_smoke() -> None:
    from benchmarks.connectors_bench import bench_smtp, bench_webhook

    smtp = bench_smtp(50, pool=2, mode="thread")
    webhook = bench_webhook(50, concurrency=10, mode="thread")
    assert (smtp.sent, smtp.received) == (50, 50)
    assert (webhook.sent, webhook.received) == (50, 50)
