"""SMTPTransport against a real aiosmtpd server: delivery, TLS, AUTH, XOAUTH2,
error mapping by fault injection, and session reuse."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import pytest

from mailpool import (
    Account,
    AccountPool,
    AuthenticationError,
    ConnectFailure,
    DeliveryUnknown,
    InMemoryStorage,
    MessageRejected,
    OAuth2Credentials,
    RetryPolicy,
    SendError,
    SMTPSettings,
    SMTPTransport,
    TemporarySendError,
)
from mailpool.testing import ManualClock
from smtpserver import OAUTH_TOKENS, USERS, SMTPTestServer

ALICE = "alice@example.com"
RECIPIENT = "dave@example.net"
TLS_SERVERS = ["smtp_starttls_server", "smtp_tls_server"]


def make_account(server: SMTPTestServer, email: str = ALICE, **fields: Any) -> Account:
    """An account on ``server``, encrypted the way the server's mode expects."""
    smtp = SMTPSettings(
        host=server.host,
        port=server.port,
        use_tls=server.mode == "starttls",
        use_ssl=server.mode == "tls",
        username=fields.pop("username", None),
        password=fields.pop("password", None),
        allow_insecure_auth=server.mode == "plain",
    )
    return Account(email=email, smtp=smtp, min_wait_time=0, **fields)


def make_message(to: str = RECIPIENT) -> EmailMessage:
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = "Hello"
    message.set_content("Hi Dave.\n")
    return message


def error_texts(error: BaseException) -> str:
    """str() and repr() of ``error`` and of every exception chained to it."""
    texts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        texts += [str(current), repr(current), *map(repr, current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def no_retry_expected(seconds: float) -> None:
    raise AssertionError(f"unexpected retry (wait {seconds} s)")


@pytest.fixture
def transport(client_ssl_context: ssl.SSLContext) -> Iterator[SMTPTransport]:
    transport = SMTPTransport(timeout=5.0, ssl_context=client_ssl_context)
    yield transport
    transport.close()


@pytest.fixture
def pool(smtp_server: SMTPTestServer, transport: SMTPTransport) -> AccountPool:
    storage = InMemoryStorage()
    storage.add(make_account(smtp_server, sender_name="Zoë Müller"))
    retry = RetryPolicy(jitter=False, sleep=no_retry_expected)
    return AccountPool(storage, transport=transport, retry=retry, clock=ManualClock())


# -- delivery ---------------------------------------------------------------------


def test_plain_relay_delivers_without_auth_from_the_account_address(
    smtp_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    refused = transport.send(make_account(smtp_server), make_message())

    assert refused == ()
    [received] = smtp_server.messages
    assert received.mail_from == ALICE
    assert received.rcpt_tos == (RECIPIENT,)
    assert received.auth_user is None
    assert smtp_server.auth_attempts == 0


def test_pool_fills_from_with_the_sender_name_and_sets_a_message_id(
    smtp_server: SMTPTestServer, pool: AccountPool
) -> None:
    result = pool.send(make_message())

    [received] = smtp_server.messages
    assert received.mail_from == ALICE
    assert parseaddr(str(received.message["From"])) == ("Zoë Müller", ALICE)
    assert received.message["Message-ID"] == result.message_id
    assert result.message_id.startswith("<") and result.message_id.endswith(">")


def test_pool_does_not_modify_the_callers_message(
    smtp_server: SMTPTestServer, pool: AccountPool
) -> None:
    message = make_message()
    before = message.as_bytes()

    pool.send(message)

    assert message.as_bytes() == before
    assert message["From"] is None
    assert message["Message-ID"] is None
    assert len(smtp_server.messages) == 1


def test_bcc_recipients_receive_the_message_without_a_bcc_header(
    smtp_server: SMTPTestServer, pool: AccountPool
) -> None:
    pool.send_mail(subject="Hi", body="Hello.", to=RECIPIENT, bcc=["eve@example.org"])

    [received] = smtp_server.messages
    assert set(received.rcpt_tos) == {RECIPIENT, "eve@example.org"}
    assert "Bcc" not in received.message
    assert b"eve@example.org" not in received.raw


# -- TLS and AUTH -----------------------------------------------------------------


@pytest.mark.parametrize("server_fixture", TLS_SERVERS)
def test_encrypted_login_delivers_as_the_authenticated_user(
    server_fixture: str, request: pytest.FixtureRequest, transport: SMTPTransport
) -> None:
    server: SMTPTestServer = request.getfixturevalue(server_fixture)

    transport.send(make_account(server, password=USERS[ALICE]), make_message())

    [received] = server.messages
    assert received.auth_user == ALICE
    assert received.mail_from == ALICE


def test_xoauth2_with_a_valid_token_logs_in_as_the_username(
    smtp_tls_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    oauth2 = OAuth2Credentials(access_token=OAUTH_TOKENS[ALICE])
    alias = "sales@example.com"
    account = make_account(smtp_tls_server, alias, username=ALICE, oauth2=oauth2)

    transport.send(account, make_message())

    [received] = smtp_tls_server.messages
    assert received.auth_user == ALICE
    assert received.mail_from == alias


def test_xoauth2_with_a_bad_token_raises_authentication_error(
    smtp_tls_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    token = "ya29.revoked-token"
    account = make_account(
        smtp_tls_server, oauth2=OAuth2Credentials(access_token=token)
    )

    with pytest.raises(AuthenticationError) as info:
        transport.send(account, make_message())

    assert info.value.smtp_code == 535
    assert info.value.account_id == account.id
    assert token not in error_texts(info.value)
    assert smtp_tls_server.messages == []


def test_expired_oauth2_token_fails_without_trying_to_log_in(
    smtp_tls_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    oauth2 = OAuth2Credentials(
        access_token=OAUTH_TOKENS[ALICE],
        token_expiry=datetime(2020, 1, 1, tzinfo=timezone.utc),
    )

    with pytest.raises(AuthenticationError, match="expired"):
        transport.send(make_account(smtp_tls_server, oauth2=oauth2), make_message())

    assert smtp_tls_server.auth_attempts == 0
    assert smtp_tls_server.messages == []


@pytest.mark.parametrize("server_fixture", TLS_SERVERS)
def test_certificates_are_verified_by_default(
    server_fixture: str, request: pytest.FixtureRequest
) -> None:
    server: SMTPTestServer = request.getfixturevalue(server_fixture)
    transport = SMTPTransport(timeout=5.0)

    with pytest.raises(SendError) as info:
        transport.send(make_account(server, password=USERS[ALICE]), make_message())

    assert not isinstance(info.value, TemporarySendError)
    assert "certificate" in str(info.value)
    assert "ssl_context" in str(info.value)
    assert server.auth_attempts == 0


def test_wrong_password_raises_authentication_error_without_revealing_it(
    smtp_starttls_server: SMTPTestServer,
    transport: SMTPTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "N0t-Alices-S3cret"
    account = make_account(smtp_starttls_server, password=password)
    caplog.set_level(logging.DEBUG, logger="mailpool")

    with pytest.raises(AuthenticationError) as info:
        transport.send(account, make_message())

    assert info.value.smtp_code == 535
    assert password not in error_texts(info.value)
    assert password not in caplog.text
    assert smtp_starttls_server.messages == []


def test_server_requiring_auth_refusing_an_account_without_login_is_an_auth_error(
    smtp_starttls_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    # 530 "Authentication required" answers MAIL FROM here, not AUTH.
    with pytest.raises(AuthenticationError) as info:
        transport.send(make_account(smtp_starttls_server), make_message())

    assert info.value.smtp_code == 530


# -- error mapping ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "reply", "error", "recipients"),
    [
        ("RCPT", "550 5.1.1 No such user", MessageRejected, (RECIPIENT,)),
        ("RCPT", "450 4.2.1 Mailbox busy", TemporarySendError, None),
        ("DATA", "554 5.6.0 Message refused", MessageRejected, ()),
        ("DATA_END", "554 5.7.1 Spam detected", MessageRejected, ()),
        ("DATA", "451 4.3.0 Try again later", TemporarySendError, None),
        ("DATA_END", "452 4.3.1 Out of storage", TemporarySendError, None),
        ("MAIL", "421 4.3.2 Shutting down", TemporarySendError, None),
    ],
)
def test_server_replies_map_to_send_errors_and_the_transport_recovers(
    smtp_server: SMTPTestServer,
    transport: SMTPTransport,
    command: str,
    reply: str,
    error: type[SendError],
    recipients: tuple[str, ...] | None,
) -> None:
    account = make_account(smtp_server)
    smtp_server.fail_next(command, reply)

    with pytest.raises(SendError) as info:
        transport.send(account, make_message())

    assert type(info.value) is error
    assert info.value.smtp_code == int(reply[:3])
    assert info.value.account_id == account.id
    if recipients is not None:
        assert isinstance(info.value, MessageRejected)
        assert info.value.recipients == recipients
    assert smtp_server.messages == []
    transport.send(account, make_message())
    assert len(smtp_server.messages) == 1


def test_refused_recipients_are_reported_when_others_accepted(
    smtp_server: SMTPTestServer, pool: AccountPool
) -> None:
    smtp_server.reject_recipient("ghost@example.net")

    result = pool.send_mail(
        subject="Hi", body="Hello.", to=[RECIPIENT, "ghost@example.net"]
    )

    assert result.refused_recipients == ("ghost@example.net",)
    [received] = smtp_server.messages
    assert received.rcpt_tos == (RECIPIENT,)


def test_dropped_connection_raises_connect_failure(
    smtp_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    smtp_server.drop_next("DATA")

    with pytest.raises(ConnectFailure) as info:
        transport.send(make_account(smtp_server), make_message())

    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value, TemporarySendError)
    assert smtp_server.messages == []


def test_silent_server_raises_connect_failure_after_the_timeout(
    smtp_server: SMTPTestServer, client_ssl_context: ssl.SSLContext
) -> None:
    # Held until the client has given up: only MAIL can time out, and the 1 s
    # timeout leaves connect and EHLO room on a busy machine.
    hold = smtp_server.hold_next("MAIL")
    transport = SMTPTransport(timeout=1.0, ssl_context=client_ssl_context)

    try:
        with pytest.raises(ConnectFailure, match="did not answer in time"):
            transport.send(make_account(smtp_server), make_message())
        hold.wait_reached()
    finally:
        hold.release()

    assert smtp_server.messages == []


def test_nothing_listening_raises_connect_failure(transport: SMTPTransport) -> None:
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        account = Account(
            email=ALICE, smtp=SMTPSettings(host="127.0.0.1", port=port, use_tls=False)
        )

        with pytest.raises(ConnectFailure, match=f"127.0.0.1:{port}"):
            transport.send(account, make_message())


def test_implicit_tls_against_a_plain_server_names_use_ssl_and_the_port(
    smtp_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    smtp = SMTPSettings(
        host=smtp_server.host, port=smtp_server.port, use_tls=False, use_ssl=True
    )

    with pytest.raises(SendError) as info:
        transport.send(Account(email=ALICE, smtp=smtp), make_message())

    assert not isinstance(info.value, TemporarySendError)
    assert "use_ssl" in str(info.value)
    assert f":{smtp_server.port}" in str(info.value)


def test_connection_closed_during_the_tls_handshake_is_temporary(
    transport: SMTPTransport,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def hang_up() -> None:  # a server that accepts, then closes at once
            connection, _ = listener.accept()
            connection.close()

        closer = threading.Thread(target=hang_up)
        closer.start()
        smtp = SMTPSettings(host="127.0.0.1", port=port, use_tls=False, use_ssl=True)
        with pytest.raises(ConnectFailure):  # EOF or reset, by timing
            transport.send(Account(email=ALICE, smtp=smtp), make_message())
        closer.join(timeout=5)


# -- sessions ---------------------------------------------------------------------


def test_sends_through_one_account_reuse_one_connection(
    smtp_server: SMTPTestServer, pool: AccountPool
) -> None:
    pool.send(make_message())
    pool.send(make_message())

    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 1


def test_close_ends_the_session_and_the_next_send_reconnects(
    smtp_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    account = make_account(smtp_server)
    transport.send(account, make_message())

    transport.close()
    transport.send(account, make_message())

    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 2


def test_close_during_a_send_does_not_keep_that_session(
    smtp_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    account = make_account(smtp_server)
    hold = smtp_server.hold_next("DATA_END")
    refused: list[Sequence[str]] = []
    sender = threading.Thread(
        target=lambda: refused.append(transport.send(account, make_message()))
    )
    sender.start()
    try:
        hold.wait_reached()  # the send is in flight, its session checked out
        transport.close()
    finally:
        hold.release()
        sender.join()

    assert refused == [()]  # the send in flight still succeeds
    transport.send(account, make_message())
    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 2  # the closed-over session was not reused


@pytest.mark.parametrize("command", ["MAIL", "NOOP"])
def test_session_dropped_by_the_server_is_replaced_transparently(
    smtp_server: SMTPTestServer, transport: SMTPTransport, command: str
) -> None:
    account = make_account(smtp_server)
    transport.send(account, make_message())
    if command == "NOOP":
        transport.noop_after = 0.0  # the session counts as idle: checked first
    smtp_server.drop_next(command)

    transport.send(account, make_message("erin@example.org"))

    assert [m.rcpt_tos for m in smtp_server.messages] == [
        (RECIPIENT,),
        ("erin@example.org",),
    ]
    assert smtp_server.connections == 2


def test_a_recently_used_session_is_reused_without_noop(
    smtp_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    account = make_account(smtp_server)
    for _ in range(3):
        transport.send(account, make_message())

    assert smtp_server.connections == 1
    assert "NOOP" not in smtp_server.commands


def test_a_drop_after_the_body_left_is_not_resent_on_a_new_session(
    smtp_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    account = make_account(smtp_server)
    transport.send(account, make_message())
    smtp_server.drop_next("DATA_END")

    with pytest.raises(DeliveryUnknown):
        transport.send(account, make_message("erin@example.org"))
    assert smtp_server.connections == 1


def test_without_reuse_each_send_opens_its_own_connection(
    smtp_server: SMTPTestServer,
) -> None:
    transport = SMTPTransport(timeout=5.0, reuse_connections=False)
    account = make_account(smtp_server)

    for _ in range(3):
        transport.send(account, make_message())

    assert len(smtp_server.messages) == 3
    assert smtp_server.connections == 3


def test_changed_password_opens_a_new_session(
    smtp_starttls_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    account = make_account(smtp_starttls_server, password=USERS[ALICE])
    transport.send(account, make_message())
    smtp_starttls_server.users = {**USERS, ALICE: "rotated-pass"}

    rotated = make_account(smtp_starttls_server, password="rotated-pass", id=account.id)
    transport.send(rotated, make_message())

    assert len(smtp_starttls_server.messages) == 2
    assert smtp_starttls_server.connections == 2
    assert smtp_starttls_server.auth_attempts == 2


# -- check() ----------------------------------------------------------------------


def test_check_reports_the_server_and_the_login(
    smtp_starttls_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    account = make_account(smtp_starttls_server, password=USERS[ALICE])

    message = transport.check(account)

    assert f"{smtp_starttls_server.host}:{smtp_starttls_server.port}" in message
    assert ALICE in message
    assert USERS[ALICE] not in message
    assert smtp_starttls_server.auth_attempts == 1
    assert smtp_starttls_server.messages == []


def test_check_with_a_wrong_password_raises_authentication_error(
    smtp_starttls_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    account = make_account(smtp_starttls_server, password="wrong-password")

    with pytest.raises(AuthenticationError) as info:
        transport.check(account)

    assert info.value.smtp_code == 535
    assert "wrong-password" not in str(info.value)
