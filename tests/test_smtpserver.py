"""Self-tests of the in-process SMTP test server, driven by stdlib smtplib."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage

import pytest

from smtpserver import MAX_STALL_SECONDS, OAUTH_TOKENS, USERS, SMTPTestServer

TIMEOUT = 5.0  # a server that hangs fails the test quickly instead of at 120 s
GIVE_UP = 0.5  # the reply timeout of a client meant to give up on a silent server


def make_message(
    sender: str = "alice@example.com",
    to: str = "dave@example.net",
    subject: str = "Hello",
    body: str = "Hi Dave,\nthis is a test.\n",
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def expect_refusal(
    client: smtplib.SMTP, error: type[smtplib.SMTPResponseException], code: int
) -> None:
    """Sending a message through ``client`` fails with ``error`` and ``code``."""
    with pytest.raises(error) as excinfo:
        client.send_message(make_message())
    assert excinfo.value.smtp_code == code


def connect(server: SMTPTestServer, timeout: float = TIMEOUT) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=timeout)


def xoauth2(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def raw_session(server: SMTPTestServer) -> socket.socket:
    """A bare TCP connection past the greeting, to watch replies byte by byte."""
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    assert sock.recv(1024).startswith(b"220 ")
    return sock


# -- delivery ---------------------------------------------------------------------


def test_delivery_is_recorded_with_envelope_and_parsed_message(
    smtp_server: SMTPTestServer,
) -> None:
    assert smtp_server.host == "127.0.0.1"
    assert smtp_server.port > 0
    with connect(smtp_server) as client:
        refused = client.send_message(
            make_message(subject="Grüße"),
            from_addr="bounce@example.com",
            to_addrs=["dave@example.net", "erin@example.org"],
        )
    assert refused == {}
    [received] = smtp_server.messages
    assert received.mail_from == "bounce@example.com"
    assert received.rcpt_tos == ("dave@example.net", "erin@example.org")
    assert received.auth_user is None
    assert received.message["Subject"] == "Grüße"
    assert received.message["To"] == "dave@example.net"
    assert received.message.get_content() == "Hi Dave,\nthis is a test.\n"
    assert received.raw.startswith(b"From: alice@example.com\r\n")


def test_wait_for_messages(smtp_server: SMTPTestServer) -> None:
    def send() -> None:
        time.sleep(0.1)
        with connect(smtp_server) as client:
            client.send_message(make_message())

    sender = threading.Thread(target=send)
    sender.start()
    try:
        [received] = smtp_server.wait_for_messages(1, timeout=TIMEOUT)
    finally:
        sender.join()
    assert received.rcpt_tos == ("dave@example.net",)
    with pytest.raises(TimeoutError):
        smtp_server.wait_for_messages(2, timeout=0.05)


# -- AUTH -------------------------------------------------------------------------


def test_plain_server_offers_auth_but_does_not_require_it(
    smtp_server: SMTPTestServer,
) -> None:
    with connect(smtp_server) as client:
        client.ehlo()
        assert client.has_extn("auth")
        assert "XOAUTH2" not in client.esmtp_features["auth"]
        client.user, client.password = "alice@example.com", USERS["alice@example.com"]
        code, _ = client.auth("PLAIN", client.auth_plain)
        assert code == 235
        client.send_message(make_message())
    assert smtp_server.messages[0].auth_user == "alice@example.com"
    assert smtp_server.auth_attempts == 1


def test_auth_login(smtp_server: SMTPTestServer) -> None:
    with connect(smtp_server) as client:
        client.ehlo()
        client.user, client.password = "bob@example.com", USERS["bob@example.com"]
        code, _ = client.auth("LOGIN", client.auth_login)
        assert code == 235
        client.send_message(make_message(sender="bob@example.com"))
    assert smtp_server.messages[0].auth_user == "bob@example.com"


def test_bad_password_gets_a_535_reply(smtp_server: SMTPTestServer) -> None:
    with connect(smtp_server) as client:
        client.ehlo()
        client.user, client.password = "alice@example.com", "wrong"
        # An unanswered AUTH would end in a timeout (SMTPServerDisconnected).
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.auth("PLAIN", client.auth_plain)
        assert excinfo.value.smtp_code == 535
        # The session is still usable after a failed AUTH.
        assert client.noop()[0] == 250
    assert smtp_server.auth_attempts == 1


def test_starttls_then_login(
    smtp_starttls_server: SMTPTestServer, client_ssl_context: ssl.SSLContext
) -> None:
    with connect(smtp_starttls_server) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")  # AUTH only over TLS
        client.starttls(context=client_ssl_context)
        client.ehlo()
        assert client.has_extn("auth")
        client.login("carol@example.com", USERS["carol@example.com"])
        client.send_message(make_message(sender="carol@example.com"))
    [received] = smtp_starttls_server.messages
    assert received.auth_user == "carol@example.com"


def test_starttls_server_requires_auth(
    smtp_starttls_server: SMTPTestServer, client_ssl_context: ssl.SSLContext
) -> None:
    with connect(smtp_starttls_server) as client:
        client.starttls(context=client_ssl_context)
        expect_refusal(client, smtplib.SMTPSenderRefused, 530)
    assert smtp_starttls_server.messages == []


def test_implicit_tls_then_login(
    smtp_tls_server: SMTPTestServer, client_ssl_context: ssl.SSLContext
) -> None:
    with smtplib.SMTP_SSL(
        smtp_tls_server.host,
        smtp_tls_server.port,
        context=client_ssl_context,
        timeout=TIMEOUT,
    ) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert "XOAUTH2" in client.esmtp_features["auth"]
        client.login("bob@example.com", USERS["bob@example.com"])
        client.send_message(make_message(sender="bob@example.com"))
    [received] = smtp_tls_server.messages
    assert received.auth_user == "bob@example.com"
    assert smtp_tls_server.connections == 1


def test_xoauth2_good_and_bad_token(
    smtp_tls_server: SMTPTestServer, client_ssl_context: ssl.SSLContext
) -> None:
    user = "alice@example.com"
    with smtplib.SMTP_SSL(
        smtp_tls_server.host,
        smtp_tls_server.port,
        context=client_ssl_context,
        timeout=TIMEOUT,
    ) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.auth("XOAUTH2", lambda challenge=None: xoauth2(user, "expired"))
        assert excinfo.value.smtp_code == 535
        assert b"Username and Password not accepted" in excinfo.value.smtp_error

        blob = base64.b64encode(xoauth2(user, OAUTH_TOKENS[user]).encode()).decode()
        code, _ = client.docmd("AUTH", f"XOAUTH2 {blob}")
        assert code == 235
        client.send_message(make_message())
    [received] = smtp_tls_server.messages
    assert received.auth_user == user
    assert smtp_tls_server.auth_attempts == 2


def test_fail_next_auth(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail_next("AUTH", "454 4.7.0 Temporary authentication failure")
    with connect(smtp_server) as client:
        client.ehlo()
        client.user, client.password = "alice@example.com", USERS["alice@example.com"]
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.auth("PLAIN", client.auth_plain)
        assert excinfo.value.smtp_code == 454
        assert client.auth("PLAIN", client.auth_plain)[0] == 235


# -- fault injection --------------------------------------------------------------


def test_fail_next_rcpt_then_next_message_goes_through(
    smtp_server: SMTPTestServer,
) -> None:
    smtp_server.fail_next("RCPT", "550 5.1.1 No such user")
    with connect(smtp_server) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as excinfo:
            client.send_message(make_message())
        assert excinfo.value.recipients == {
            "dave@example.net": (550, b"5.1.1 No such user")
        }
        assert client.send_message(make_message()) == {}
    assert len(smtp_server.messages) == 1
    assert smtp_server.connections == 1


def test_fail_next_times_and_order(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail_next("DATA", "451 4.3.0 Try again later", times=2)
    with connect(smtp_server) as client:
        for _ in range(2):
            expect_refusal(client, smtplib.SMTPDataError, 451)
            # As on a real server, a refused DATA leaves the transaction open
            # (smtplib does not RSET after a DATA error; MAIL would get 503).
            client.rset()
        client.send_message(make_message())
    assert len(smtp_server.messages) == 1


def test_fail_next_421_closes_the_connection(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail_next("MAIL", "421 4.7.0 Too busy")
    with connect(smtp_server) as client:
        expect_refusal(client, smtplib.SMTPSenderRefused, 421)
    # A new connection works.
    with connect(smtp_server) as client:
        client.send_message(make_message())
    assert smtp_server.connections == 2
    assert len(smtp_server.messages) == 1


def test_fail_next_after_data_content(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail_next("DATA_END", "552 5.3.4 Message too big")
    with connect(smtp_server) as client:
        expect_refusal(client, smtplib.SMTPDataError, 552)
    assert smtp_server.messages == []


def test_fail_next_421_after_data_content_closes(
    smtp_server: SMTPTestServer,
) -> None:
    smtp_server.fail_next("DATA_END", "421 4.3.2 Shutting down")
    with connect(smtp_server) as client:
        client.ehlo()
        assert client.mail("alice@example.com")[0] == 250
        assert client.rcpt("dave@example.net")[0] == 250
        assert client.data(make_message().as_bytes())[0] == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()  # the server closed the connection
    assert smtp_server.messages == []


def test_fail_greeting(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail_next("CONNECT", "554 5.7.1 Go away")
    with pytest.raises(smtplib.SMTPConnectError) as excinfo:
        connect(smtp_server)
    assert excinfo.value.smtp_code == 554
    with connect(smtp_server) as client:
        assert client.noop()[0] == 250


def test_fail_next_ehlo(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail_next("EHLO", "502 5.5.1 Command not implemented")
    with connect(smtp_server) as client:
        assert client.ehlo()[0] == 502
        assert client.ehlo()[0] == 250


def test_drop_next_data_disconnects(smtp_server: SMTPTestServer) -> None:
    smtp_server.drop_next("DATA")
    with connect(smtp_server) as client:
        with pytest.raises(smtplib.SMTPServerDisconnected) as excinfo:
            client.send_message(make_message())
        # Closed by the server, not a reply that never came.
        assert "timed out" not in str(excinfo.value)
    assert smtp_server.messages == []
    with connect(smtp_server) as client:
        client.send_message(make_message())
    assert len(smtp_server.messages) == 1


def test_drop_over_tls(
    smtp_starttls_server: SMTPTestServer, client_ssl_context: ssl.SSLContext
) -> None:
    smtp_starttls_server.drop_next("AUTH")
    with connect(smtp_starttls_server) as client:
        client.starttls(context=client_ssl_context)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.login("alice@example.com", USERS["alice@example.com"])


def test_drop_after_data_content(smtp_server: SMTPTestServer) -> None:
    smtp_server.drop_next("DATA_END")
    with (
        connect(smtp_server) as client,
        pytest.raises(smtplib.SMTPServerDisconnected),
    ):
        client.send_message(make_message())
    assert smtp_server.messages == []


def test_stall_next_times_out_a_client(smtp_server: SMTPTestServer) -> None:
    stall = smtp_server.stall_next("MAIL", MAX_STALL_SECONDS)
    with connect(smtp_server) as client:
        client.ehlo()
        assert client.sock is not None
        # Only the stalled reply gets the short timeout, not connect and EHLO.
        client.sock.settimeout(GIVE_UP)
        # smtplib reports a socket timeout while reading a reply as a disconnect.
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            client.send_message(make_message())
    stall.wait_reached()
    assert not stall.released
    assert smtp_server.messages == []


def test_stall_then_answer_normally(smtp_server: SMTPTestServer) -> None:
    stall = smtp_server.stall_next("NOOP", 0.1)
    with connect(smtp_server) as client:
        assert client.noop()[0] == 250
        assert stall.reached.is_set()  # the server did stall at NOOP
        assert not stall.released  # and answered once its time was up
        assert client.noop()[0] == 250


def test_hold_next_stays_silent_until_released(smtp_server: SMTPTestServer) -> None:
    hold = smtp_server.hold_next("noop")
    assert hold.point == "NOOP"
    with raw_session(smtp_server) as sock:
        sock.sendall(b"NOOP\r\n")
        hold.wait_reached()
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1024)  # no reply while held
        hold.release()
        sock.settimeout(TIMEOUT)
        assert sock.recv(1024).startswith(b"250 ")
        sock.sendall(b"NOOP\r\n")  # one command only
        assert sock.recv(1024).startswith(b"250 ")
    assert hold.released


def test_hold_next_data_end_delays_the_delivery(smtp_server: SMTPTestServer) -> None:
    hold = smtp_server.hold_next("DATA_END")
    refused: list[dict[str, tuple[int, bytes]]] = []
    with connect(smtp_server) as client:
        sender = threading.Thread(
            target=lambda: refused.append(client.send_message(make_message()))
        )
        sender.start()
        try:
            hold.wait_reached()
            assert smtp_server.messages == []
            assert sender.is_alive()  # still waiting for the reply
        finally:
            hold.release()
            sender.join()
    assert refused == [{}]
    assert len(smtp_server.messages) == 1


def test_hold_released_before_the_command_does_not_hold(
    smtp_server: SMTPTestServer,
) -> None:
    hold = smtp_server.hold_next("NOOP")
    with pytest.raises(TimeoutError, match="never reached NOOP"):
        hold.wait_reached(timeout=0.01)  # nothing sent NOOP yet
    hold.release()
    with connect(smtp_server) as client:
        assert client.noop()[0] == 250
    assert hold.reached.is_set()


def test_reject_recipient(smtp_server: SMTPTestServer) -> None:
    smtp_server.reject_recipient("Ghost@Example.net")
    with connect(smtp_server) as client:
        refused = client.send_message(
            make_message(), to_addrs=["dave@example.net", "ghost@example.net"]
        )
        assert refused == {"ghost@example.net": (550, b"5.1.1 No such user")}
        # Permanent: it is refused again.
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(make_message(), to_addrs=["ghost@example.net"])
    [received] = smtp_server.messages
    assert received.rcpt_tos == ("dave@example.net",)


def test_connections_counter(smtp_server: SMTPTestServer) -> None:
    assert smtp_server.connections == 0
    with connect(smtp_server) as client:
        client.send_message(make_message())
        client.send_message(make_message())
    assert smtp_server.connections == 1
    with connect(smtp_server) as client:
        client.send_message(make_message())
    assert smtp_server.connections == 2
    assert len(smtp_server.messages) == 3


def test_invalid_fault_arguments(smtp_server: SMTPTestServer) -> None:
    with pytest.raises(ValueError, match="unknown fault point"):
        smtp_server.fail_next("VRFY", "550 nope")
    with pytest.raises(ValueError, match="status code"):
        smtp_server.fail_next("RCPT", "nope")
    with pytest.raises(ValueError, match="times"):
        smtp_server.drop_next("DATA", times=0)
    with pytest.raises(ValueError, match="seconds"):
        smtp_server.stall_next("DATA", 3600)
    with pytest.raises(ValueError, match="unknown fault point"):
        smtp_server.hold_next("VRFY")


def test_tls_modes_need_a_context() -> None:
    with pytest.raises(ValueError, match="tls_context"):
        SMTPTestServer(mode="tls")


def test_stop_aborts_idle_and_held_sessions_and_joins_its_thread(
    server_tls_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    threads_before = set(threading.enumerate())
    server = SMTPTestServer(
        mode="starttls", users=USERS, tls_context=server_tls_context
    )
    server.start()
    idle = connect(server)
    tls = connect(server)
    tls.starttls(context=client_ssl_context)
    hold = server.hold_next("NOOP")
    held = raw_session(server)
    try:
        held.sendall(b"NOOP\r\n")
        hold.wait_reached()
        assert server.connections == 3
        server.stop()  # without releasing the hold
        assert set(threading.enumerate()) <= threads_before
        assert held.recv(1024) == b""  # closed without a reply
        for client in (idle, tls):
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
        server.stop()  # idempotent
        hold.release()  # harmless once the server is gone
    finally:
        held.close()
        idle.close()
        tls.close()
