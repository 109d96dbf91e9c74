"""SmtpConnector against a real local SMTP server (aiosmtpd via SmtpCatcher)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import (
    ConnectorError,
    Delivery,
    InvalidRequest,
    PermanentError,
    RetryableError,
    SendResult,
)
from connectors.email import mime
from connectors.email.smtp import SmtpConnector
from notiflow.devservices import SmtpCatcher, free_port
from notiflow.settings import Settings
from tests.connectors.harness import Case, attempt, cases

ADDRESS = "alice@example.org"


@pytest.fixture(params=[True, False], ids=["pipelining", "sequential"])
def smtp_catcher(request: pytest.FixtureRequest) -> Iterator[SmtpCatcher]:
    """Every test against the catcher runs with and without PIPELINING offered."""
    with SmtpCatcher(pipelining=request.param) as catcher:
        yield catcher


def connector_for(catcher: SmtpCatcher, **kwargs: object) -> SmtpConnector:
    return SmtpConnector(catcher.host, catcher.port, local_hostname="tests.local", **kwargs)  # type: ignore[arg-type]


# --- one case table: what the server does → how the connector classifies it --------------
CASES = [
    Case("accepted", lambda c: None, SendResult),
    Case("rcpt_451_local_error", lambda c: c.fail_next(1, 451), RetryableError, 451),
    Case("rcpt_450_greylisted", lambda c: c.fail_next(1, 450, "Greylisted"), RetryableError, 450),
    Case("rcpt_452_too_many", lambda c: c.fail_next(1, 452, "Too many"), RetryableError, 452),
    Case("rcpt_550_no_mailbox", lambda c: c.refuse(ADDRESS, 550), PermanentError, 550),
    Case("rcpt_553_bad_name", lambda c: c.fail_next(1, 553, "Not allowed"), PermanentError, 553),
    Case(
        "data_451", lambda c: c.fail_next(1, 451, "Try later", command="data"), RetryableError, 451
    ),
    Case(
        "data_421_closing",
        lambda c: c.fail_next(1, 421, "Bye", command="data"),
        RetryableError,
        421,
    ),
    Case(
        "data_554_rejected",
        lambda c: c.fail_next(1, 554, "Spam", command="data"),
        PermanentError,
        554,
    ),
    Case(
        "data_552_too_big",
        lambda c: c.fail_next(1, 552, "Too big", command="data"),
        PermanentError,
        552,
    ),
]


@cases(CASES)
def test_reply_classification(case: Case, smtp_catcher: SmtpCatcher, make_delivery, run) -> None:
    case.arrange(smtp_catcher)
    connector = connector_for(smtp_catcher, pool_size=1)

    async def scenario() -> tuple[SendResult | ConnectorError, SendResult]:
        await connector.open()
        try:
            try:
                outcome: SendResult | ConnectorError = await connector.send(make_delivery())
            except ConnectorError as error:
                outcome = error
            follow_up = await connector.send(make_delivery(address="bob@example.org"))
            return outcome, follow_up
        finally:
            await connector.close()

    outcome, follow_up = run(scenario())
    assert isinstance(outcome, case.outcome), outcome
    assert isinstance(follow_up, SendResult)  # the pool recovers after any refusal
    # After RSET the same connection is reused; 421 makes the client hang up and reconnect.
    assert smtp_catcher.connections == (2 if case.status == 421 else 1)
    if isinstance(outcome, ConnectorError):
        assert outcome.status == case.status
        assert str(case.status) in outcome.reason
        assert smtp_catcher.count == 1  # only the follow-up arrived
    else:
        assert smtp_catcher.count == 2


def test_message_content_and_headers(smtp_catcher: SmtpCatcher, make_delivery, run) -> None:
    delivery = make_delivery(
        address="Alice Ä <alice@example.org>",
        subject="Grüße ✓",
        body="Hallo Älice,\nyour order is on its way.",
        html="<p>Hallo <b>Älice</b></p>",
        metadata={"unsubscribe_url": "https://example.org/u/abc?x=1"},
        category="marketing",
    )
    connector = connector_for(smtp_catcher, sender="Shop <shop@mail.example.com>")

    async def scenario() -> SendResult:
        await connector.open()
        try:
            return await connector.send(delivery)
        finally:
            await connector.close()

    result = run(scenario())
    assert smtp_catcher.wait_for(1, timeout=5)
    caught = smtp_catcher.messages[0]
    message = caught.message
    assert caught.mail_from == "shop@mail.example.com"
    assert caught.rcpt_tos == ("alice@example.org",)
    assert message["From"] == "Shop <shop@mail.example.com>"
    assert message["To"].addresses[0].addr_spec == "alice@example.org"
    assert message["Subject"] == "Grüße ✓"
    assert message["Date"].datetime is not None
    assert message["Message-ID"] == result.provider_message_id
    assert result.provider_message_id.endswith("@mail.example.com>")
    assert message["X-Notiflow-Notification-Id"] == delivery.notification_id
    unsubscribe = str(message["List-Unsubscribe"])
    assert "<https://example.org/u/abc?x=1>" in unsubscribe and "<mailto:" in unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    # Encoded text is in canonical form (CRLF line breaks, RFC 2045).
    plain = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert plain.strip() == delivery.body
    assert message.get_body(("html",)).get_content().strip() == delivery.html
    assert caught.raw.isascii()  # non-ASCII travels encoded: no 8BITMIME needed


def test_unsubscribe_headers_by_category(smtp_catcher: SmtpCatcher, make_delivery, run) -> None:
    deliveries = [
        make_delivery(category="transactional"),
        make_delivery(category="digest"),  # no URL: mailto only, no one-click
        make_delivery(category="digest", metadata={"unsubscribe_url": "http://plain.example/u"}),
    ]
    connector = connector_for(smtp_catcher)

    async def scenario() -> None:
        await connector.open()
        try:
            for delivery in deliveries:
                await connector.send(delivery)
        finally:
            await connector.close()

    run(scenario())
    assert smtp_catcher.wait_for(3, timeout=5)
    by_id = {m.message["X-Notiflow-Notification-Id"]: m.message for m in smtp_catcher.messages}
    transactional, mailto_only, http_url = (by_id[d.notification_id] for d in deliveries)
    assert transactional["List-Unsubscribe"] is None
    # Long values are folded right after the colon, so the parsed value starts with a space.
    assert str(mailto_only["List-Unsubscribe"]).strip().startswith("<mailto:unsubscribe@notiflow")
    assert mailto_only["List-Unsubscribe-Post"] is None
    assert "<http://plain.example/u>" in str(http_url["List-Unsubscribe"])
    assert http_url["List-Unsubscribe-Post"] is None  # RFC 8058 requires an HTTPS URI
    assert transactional.get_content_type() == "text/plain"  # no HTML given: no alternative


def test_non_ascii_address_uses_smtputf8(smtp_catcher: SmtpCatcher, make_delivery, run) -> None:
    delivery = make_delivery(address="Jörg <jörg@exämple.org>")
    assert isinstance(run(attempt(connector_for(smtp_catcher), delivery)), SendResult)
    assert smtp_catcher.wait_for(1, timeout=5)
    caught = smtp_catcher.messages[0]
    assert caught.rcpt_tos == ("jörg@exämple.org",)
    assert caught.message["To"].addresses[0].addr_spec == "jörg@exämple.org"


def test_message_id_is_stable_across_retries(make_delivery) -> None:
    connector = SmtpConnector(local_hostname="tests.local")
    delivery = make_delivery()
    first, first_id = connector.build_message(delivery)
    delivery.attempt = 2
    _, second_id = connector.build_message(delivery)
    _, other_id = connector.build_message(make_delivery())
    assert first_id == second_id == first["Message-ID"]
    assert other_id != first_id


def test_pool_reuses_connections(smtp_catcher: SmtpCatcher, make_delivery, run) -> None:
    connector = connector_for(smtp_catcher, pool_size=4)
    deliveries = [make_delivery(address=f"user{i}@example.org") for i in range(200)]

    async def scenario() -> list:
        await connector.open()
        try:
            return await connector.send_batch(deliveries, concurrency=32)
        finally:
            await connector.close()

    outcomes = run(scenario())
    assert all(isinstance(outcome, SendResult) for outcome in outcomes)
    assert smtp_catcher.wait_for(200, timeout=10)
    assert smtp_catcher.connections <= 4
    assert connector.connections_opened == smtp_catcher.connections
    received = sorted(rcpt for m in smtp_catcher.messages for rcpt in m.rcpt_tos)
    assert received == sorted(d.address for d in deliveries)


def test_reconnects_when_server_dropped_pooled_connection(
    smtp_catcher: SmtpCatcher, make_delivery, run
) -> None:
    connector = connector_for(smtp_catcher, pool_size=1)

    async def scenario() -> None:
        await connector.open()
        try:
            await connector.send(make_delivery())
            # The client has not yet seen the close: MAIL fails on the pooled connection,
            # the connector replaces it and the send still succeeds.
            assert smtp_catcher.drop_connections() == 1
            await connector.send(make_delivery())
            # Now the client has seen the close while idle: a fresh connection up front.
            assert smtp_catcher.drop_connections() == 1
            await asyncio.sleep(0.1)
            await connector.send(make_delivery())
        finally:
            await connector.close()

    run(scenario())
    assert smtp_catcher.count == 3
    assert smtp_catcher.connections == 3
    assert connector.stale_reconnects == 1


def test_reconnects_after_server_idle_timeout(make_delivery, run) -> None:
    with SmtpCatcher(idle_timeout=0.2) as catcher:
        connector = connector_for(catcher, pool_size=1)

        async def scenario() -> None:
            await connector.open()
            try:
                await connector.send(make_delivery())
                await asyncio.sleep(0.6)  # the server says 421 and hangs up meanwhile
                await connector.send(make_delivery())
            finally:
                await connector.close()

        run(scenario())
        assert catcher.count == 2
        assert catcher.connections == 2


def test_connection_refused_is_retryable(make_delivery, run) -> None:
    connector = SmtpConnector("127.0.0.1", free_port(), timeout=2, local_hostname="tests.local")
    outcome = run(attempt(connector, make_delivery()))
    assert isinstance(outcome, RetryableError)
    assert "smtp_connection" in outcome.reason


def test_silent_server_times_out_as_retryable(make_delivery, run) -> None:
    with socket.socket() as silent:  # accepts TCP (backlog) but never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        connector = SmtpConnector("127.0.0.1", port, timeout=0.3, local_hostname="tests.local")
        outcome = run(attempt(connector, make_delivery()))
    assert isinstance(outcome, RetryableError)
    assert "timeout" in outcome.reason.lower()


def test_starttls_and_auth(make_delivery, run) -> None:
    with SmtpCatcher(tls=True, username="notiflow", password="s3cret") as catcher:
        good = connector_for(
            catcher, starttls=True, validate_certs=False, username="notiflow", password="s3cret"
        )
        wrong = connector_for(
            catcher, starttls=True, validate_certs=False, username="notiflow", password="nope"
        )
        anonymous = connector_for(catcher, starttls=True, validate_certs=False)
        outcomes = [run(attempt(c, make_delivery())) for c in (good, wrong, anonymous)]
        assert catcher.count == 1
    ok, bad_password, no_auth = outcomes
    assert isinstance(ok, SendResult)
    assert isinstance(bad_password, PermanentError) and bad_password.status == 535
    assert isinstance(no_auth, PermanentError) and no_auth.status == 530


def test_tls_setup_mismatches_are_permanent(smtp_catcher: SmtpCatcher, make_delivery, run) -> None:
    with SmtpCatcher(tls=True) as tls_catcher:  # self-signed certificate
        verifying = connector_for(tls_catcher, starttls=True, validate_certs=True)
        untrusted = run(attempt(verifying, make_delivery()))
    no_starttls = run(attempt(connector_for(smtp_catcher, starttls=True), make_delivery()))
    assert isinstance(untrusted, PermanentError) and "tls_verify_failed" in untrusted.reason
    assert isinstance(no_starttls, PermanentError) and "STARTTLS" in no_starttls.reason
    assert smtp_catcher.count == 0


def test_auth_without_tls(make_delivery, run) -> None:
    with SmtpCatcher(username="notiflow", password="s3cret") as catcher:
        connector = connector_for(catcher, username="notiflow", password="s3cret")
        assert isinstance(run(attempt(connector, make_delivery())), SendResult)
        assert catcher.wait_for(1, timeout=5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"address": "not-an-address"},
        {"subject": "Hi\r\nBcc: victim@example.org"},
        {"address": "alice@example.org>\r\nRCPT TO:<x@y.z"},
    ],
    ids=["no_at_sign", "header_injection", "command_injection"],
)
def test_invalid_deliveries_are_rejected_before_sending(
    overrides: dict, smtp_catcher: SmtpCatcher, make_delivery, run
) -> None:
    outcome = run(attempt(connector_for(smtp_catcher), make_delivery(**overrides)))
    assert isinstance(outcome, InvalidRequest)
    assert smtp_catcher.count == 0


def test_from_settings_and_validation() -> None:
    settings = Settings(smtp_host="mail.example.com", smtp_port=2525, smtp_pool_size=3)
    connector = SmtpConnector.from_settings(settings)
    assert (connector.host, connector.port, connector.pool_size) == ("mail.example.com", 2525, 3)
    assert connector.sender_address == "noreply@notiflow.local"
    with pytest.raises(ValueError):
        SmtpConnector(starttls=True, use_tls=True)
    with pytest.raises(ValueError):
        SmtpConnector(sender="no address here")
    with pytest.raises(ValueError):
        SmtpConnector(pool_size=0)


# --- the MIME writer (connectors.email.mime): what the stdlib parser reads back ------------
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
_HEADER = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=200)


def _parse(raw: bytes) -> EmailMessage:
    return cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))


def _canonical(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


@settings(max_examples=150, deadline=None)
@given(
    subject=_HEADER.filter(lambda s: s == s.strip() and "  " not in s),
    body=_TEXT,
    html=st.none() | _TEXT,
)
def test_mime_round_trips_through_the_stdlib_parser(
    subject: str, body: str, html: str | None
) -> None:
    connector = SmtpConnector(local_hostname="tests.local", sender='"Shop, Inc." <s@shop.example>')
    delivery = Delivery("n-1", "acme", "u-1", "email", ADDRESS, body, subject=subject, html=html)
    raw = connector.render(delivery).raw
    lines = raw.split(b"\r\n")
    assert raw.isascii() and b"\r" not in b"".join(lines) and b"\n" not in b"".join(lines)
    assert max(map(len, lines)) <= 998
    message = _parse(raw)
    assert not message.defects
    assert message["Subject"] == subject
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == _canonical(body)
    if html is not None:
        assert message.get_content_type() == "multipart/alternative"
        assert message.get_body(("html",)).get_content().replace("\r\n", "\n") == _canonical(html)


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        ("plain ASCII\n.leading dot\n", "7bit"),
        ("x" * 2000, "quoted-printable"),
        ("Grüße aus Köln, wir freuen uns auf Ihren Besuch", "quoted-printable"),
        ("日本語のテキスト" * 20, "base64"),
    ],
    ids=["7bit", "long_line", "latin", "cjk"],
)
def test_mime_body_encoding(body: str, encoding: str, smtp_catcher, make_delivery, run) -> None:
    delivery = make_delivery(body=body, subject="ü" * 120)
    assert isinstance(run(attempt(connector_for(smtp_catcher), delivery)), SendResult)
    assert smtp_catcher.wait_for(1, timeout=5)
    message = smtp_catcher.messages[0].message
    assert message["Content-Transfer-Encoding"] == encoding
    assert message.get_content().replace("\r\n", "\n") == _canonical(body)
    assert message["Subject"] == "ü" * 120  # several encoded words, folded
    raw_lines = smtp_catcher.messages[0].raw.split(b"\r\n")
    assert all(len(line) <= 78 for line in raw_lines if line.startswith((b"Subject", b" =?")))


def test_mime_quotes_display_names_and_escapes_encoded_word_lookalikes() -> None:
    assert mime.format_address('Smith, "J"', "j@x.org") == '"Smith, \\"J\\"" <j@x.org>'
    assert mime.format_address("", "j@x.org") == "j@x.org"
    assert mime.format_address("Zoë", "z@x.org").startswith("=?utf-8?b?")
    assert mime.header("Subject", "=?utf-8?b?SGk=?=").startswith("Subject: =?utf-8?b?")
    with pytest.raises(ValueError):
        mime.header("Subject", "a\nb")
    with pytest.raises(ValueError):
        mime.header("X-Long", "y" * 1200)
    with pytest.raises(ValueError):
        mime.parse_address("a@b.org>\r\nRCPT TO:<x@y.z")


# --- pipelining (RFC 2920) -----------------------------------------------------------------
class EnvelopeFirstServer:
    """A scripted SMTP server offering PIPELINING that answers nothing of an envelope until
    MAIL, RCPT and DATA have all arrived: a client waiting for each reply would time out."""

    def __init__(self, rcpt_reply: bytes = b"250 ok") -> None:
        self.rcpt_reply = rcpt_reply
        self.envelopes: list[list[bytes]] = []
        self.messages: list[bytes] = []
        self.closed_without_message = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-scripted\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n")
        while True:
            group: list[bytes] = []
            while not group or group[-1] != b"DATA":
                line = (await reader.readline()).rstrip()
                if not line or line == b"QUIT":
                    writer.close()
                    return
                group.append(line.split(b":")[0])
            self.envelopes.append(group)
            writer.write(b"250 ok\r\n" + self.rcpt_reply + b"\r\n354 go ahead\r\n")
            try:
                self.messages.append(await reader.readuntil(b"\r\n.\r\n"))
            except asyncio.IncompleteReadError:
                self.closed_without_message += 1
                writer.close()
                return
            writer.write(b"250 queued\r\n")


def test_envelope_is_pipelined_when_offered(make_delivery, run) -> None:
    server = EnvelopeFirstServer()

    async def scenario() -> list:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        connector = SmtpConnector("127.0.0.1", port, timeout=2, local_hostname="tests.local")
        try:
            return [await attempt(connector, make_delivery()) for _ in range(3)]
        finally:
            await connector.close()
            listener.close()

    outcomes = run(scenario())
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert server.envelopes == [[b"MAIL FROM", b"RCPT TO", b"DATA"]] * 3
    assert len(server.messages) == 3 and all(b"Subject:" in m for m in server.messages)


def test_pipelined_refusal_sends_no_message_even_if_data_is_accepted(make_delivery, run) -> None:
    """A server that (wrongly) answers 354 after refusing the recipient gets no message: the
    connection is dropped rather than reset, and the refusal is reported."""
    server = EnvelopeFirstServer(rcpt_reply=b"550 no such user")

    async def scenario() -> object:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        connector = SmtpConnector("127.0.0.1", port, timeout=2, local_hostname="tests.local")
        try:
            outcome = await attempt(connector, make_delivery())
            await asyncio.sleep(0.1)  # the server sees the hang-up
            return outcome
        finally:
            await connector.close()
            listener.close()

    outcome = run(scenario())
    assert isinstance(outcome, PermanentError) and outcome.status == 550
    assert server.messages == [] and server.closed_without_message == 1
