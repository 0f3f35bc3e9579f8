"""Every accepted input is sent or refused cleanly, and nothing secret leaks:
header injection through any line break, internationalized addresses and
credentials, impossible settings, slow servers, 7-bit servers, one failure per
refused login, and exception chains without secrets."""

from __future__ import annotations

import socket
import threading
import traceback
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from mailpool import (
    Account,
    AccountPool,
    AuthenticationError,
    ConfigurationError,
    ConnectFailure,
    InMemoryStorage,
    OAuth2Credentials,
    RetryPolicy,
    SMTPSettings,
    SMTPTransport,
)
from mailpool._validation import LINE_BREAKS
from pooltools import ALICE, RECIPIENT, AccountFactory, PoolFactory, usage_state
from smtpserver import SMTPTestServer

BREAKS = [*sorted(LINE_BREAKS), "\x00", "\x1b"]
# Module constants, not locals: the tracebacks below are searched with the
# locals of every frame, the test's own included.
WRONG_PASSWORD = "wrong-password-s3cr3t"
REVOKED_TOKEN = "ya29.revoked-t0ken"


def ids(chars: list[str]) -> list[str]:
    return [f"U+{ord(c):04X}" for c in chars]


# -- header injection ---------------------------------------------------------------


@pytest.mark.parametrize("char", BREAKS, ids=ids(BREAKS))
def test_no_line_break_or_control_character_gets_into_a_header(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    add: AccountFactory,
    pool: AccountPool,
    char: str,
) -> None:
    alice = add()
    injected = f"hi{char}Bcc: victim@evil.org"

    with pytest.raises(ConfigurationError, match="Subject"):
        pool.send_mail(subject=injected, body="x", to=[RECIPIENT])
    with pytest.raises(ConfigurationError, match="X-Campaign"):
        pool.send_mail(
            subject="hi", body="x", to=[RECIPIENT], headers={"X-Campaign": injected}
        )
    message = EmailMessage()
    message["To"] = RECIPIENT
    try:
        message["Subject"] = injected
    except ValueError:
        pass  # the email package refuses some of them itself
    else:
        with pytest.raises(ConfigurationError, match="Subject"):
            pool.send(message)
    with pytest.raises(ConfigurationError, match="sender_name"):
        alice.replace(sender_name=f"Alice{char}Bcc: victim@evil.org")

    assert smtp_server.messages == []
    assert usage_state(storage, alice)[1] == 0  # nothing counted


def test_a_folded_header_of_a_parsed_message_is_accepted(
    smtp_server: SMTPTestServer, add: AccountFactory, pool: AccountPool
) -> None:
    add()
    message = EmailMessage()
    message["To"] = RECIPIENT
    message.set_raw("Subject", "a long subject\r\n folded onto two lines")
    message.set_content("x")

    pool.send(message)

    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("value", [5, b"bytes", None, ["a"]])
def test_a_header_value_that_is_not_a_string_is_refused(
    add: AccountFactory, pool: AccountPool, value: object
) -> None:
    add()
    with pytest.raises(ConfigurationError, match="X-Id"):
        pool.send_mail(
            subject="hi",
            body="x",
            to=[RECIPIENT],
            headers={"X-Id": value},  # type: ignore[dict-item]
        )


def test_a_body_that_is_not_a_string_is_refused(
    add: AccountFactory, pool: AccountPool
) -> None:
    add()
    with pytest.raises(ConfigurationError, match="body"):
        pool.send_mail(subject="hi", body=b"bytes", to=[RECIPIENT])  # type: ignore[arg-type]


# -- internationalized addresses and credentials ------------------------------------


def test_an_account_on_an_internationalized_domain_sends_in_its_ascii_form(
    smtp_server: SMTPTestServer, storage: InMemoryStorage, make_pool: PoolFactory
) -> None:
    smtp = SMTPSettings(host=smtp_server.host, port=smtp_server.port, use_tls=False)
    account = storage.add(
        Account(email="Jörg@Bücher.example".replace("ö", "o"), smtp=smtp)
    )
    assert account.email == "Jorg@xn--bcher-kva.example"

    make_pool().send_mail(subject="Grüße", body="Hallo wörld", to=[RECIPIENT])

    (received,) = smtp_server.messages
    assert received.mail_from == "Jorg@xn--bcher-kva.example"
    assert str(received.message["Subject"]) == "Grüße"


@pytest.mark.parametrize(
    ("address", "hint"),
    [("bob@bücher.example", "bob@xn--bcher-kva.example"), ("jörg@example.com", "")],
)
def test_a_non_ascii_recipient_is_refused_with_what_to_do(
    storage: InMemoryStorage,
    add: AccountFactory,
    pool: AccountPool,
    address: str,
    hint: str,
) -> None:
    alice = add()
    with pytest.raises(ConfigurationError, match=hint or "before '@'"):
        pool.send_mail(subject="hi", body="x", to=[address])
    assert usage_state(storage, alice)[1] == 0


def test_a_non_ascii_local_part_is_refused_for_an_account() -> None:
    smtp = SMTPSettings(host="localhost", use_tls=False)
    with pytest.raises(ConfigurationError, match="ASCII"):
        Account(email="jörg@example.com", smtp=smtp)


@pytest.fixture
def utf8_server(server_tls_context: object) -> Iterator[SMTPTestServer]:
    with SMTPTestServer(
        mode="starttls",
        users={"jörg@example.com": "pässwörd-ü"},
        require_auth=True,
        tls_context=server_tls_context,  # type: ignore[arg-type]
    ) as server:
        yield server


def test_non_ascii_credentials_log_in_as_utf_8(
    utf8_server: SMTPTestServer, client_ssl_context: object
) -> None:
    account = Account(
        email=ALICE,
        smtp=SMTPSettings(
            host=utf8_server.host,
            port=utf8_server.port,
            username="jörg@example.com",
            password="pässwörd-ü",
        ),
    )
    transport = SMTPTransport(ssl_context=client_ssl_context)  # type: ignore[arg-type]
    try:
        transport.send(account, _message("x"))
    finally:
        transport.close()
    assert utf8_server.messages[0].auth_user == "jörg@example.com"


def test_a_refused_login_is_one_failure_not_one_per_mechanism(
    smtp_starttls_server: SMTPTestServer, client_ssl_context: object
) -> None:
    account = _account(smtp_starttls_server, password="wrong-password")
    transport = SMTPTransport(ssl_context=client_ssl_context)  # type: ignore[arg-type]

    with pytest.raises(AuthenticationError):
        transport.check(account)

    assert smtp_starttls_server.auth_attempts == 1


# -- bodies and headers as the server can take them ---------------------------------


@pytest.mark.parametrize("eight_bit", [True, False])
def test_a_non_ascii_body_goes_8bit_only_to_a_server_that_offers_8bitmime(
    eight_bit: bool,
) -> None:
    text = "Grüße aus Köln — ünïcödé\n" * 3
    with SMTPTestServer(offer_8bitmime=eight_bit) as server:
        transport = SMTPTransport()
        transport.send(_account(server), _message(text))
        transport.close()
        (received,) = server.messages
    assert received.message.get_content() == text
    if eight_bit:
        assert "BODY=8BITMIME" in received.mail_options
        assert not received.raw.isascii()
    else:
        assert "BODY=8BITMIME" not in received.mail_options
        assert received.raw.isascii()


@pytest.mark.parametrize("smtputf8", [True, False])
def test_a_non_ascii_subject_arrives_intact_with_or_without_smtputf8(
    smtputf8: bool,
) -> None:
    with SMTPTestServer(offer_smtputf8=smtputf8) as server:
        transport = SMTPTransport()
        message = _message("x")
        message.replace_header("Subject", "Grüße — 🎉")
        transport.send(_account(server), message)
        transport.close()
        (received,) = server.messages
    assert str(received.message["Subject"]) == "Grüße — 🎉"
    assert ("SMTPUTF8" in received.mail_options) is smtputf8


def test_bcc_recipients_get_the_message_but_not_the_header(
    smtp_server: SMTPTestServer,
) -> None:
    message = _message("x")
    message["Bcc"] = "hidden@example.org"
    transport = SMTPTransport()
    transport.send(_account(smtp_server), message)
    transport.close()
    (received,) = smtp_server.messages
    assert set(received.rcpt_tos) == {RECIPIENT, "hidden@example.org"}
    assert b"hidden@example.org" not in received.raw


# -- slow servers ---------------------------------------------------------------------


class TricklingServer:
    """Sends a valid but very long greeting one byte at a time."""

    GREETING = b"220 " + b"x" * 200 + b"\r\n"

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            for byte in self.GREETING:
                if self.stop.wait(0.1):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return  # the client gave up
                self.sent += 1

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(timeout=10)


def test_the_deadline_bounds_a_whole_attempt_not_each_read() -> None:
    server = TricklingServer()
    account = Account(
        email=ALICE,
        smtp=SMTPSettings(host="127.0.0.1", port=server.port, use_tls=False),
    )
    # Each byte comes well within the 5 s timeout, so only the deadline ends it.
    transport = SMTPTransport(timeout=5.0, deadline=1.0)
    try:
        with pytest.raises(ConnectFailure, match="in time"):
            transport.check(account)
        server.thread.join(timeout=30)
    finally:
        server.close()
    assert server.sent < len(TricklingServer.GREETING)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_impossible_transport_timeouts_are_refused(value: float) -> None:
    with pytest.raises(ConfigurationError, match="deadline"):
        SMTPTransport(deadline=value)
    with pytest.raises(ConfigurationError, match="timeout"):
        SMTPTransport(timeout=value)


# -- impossible settings -------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"initial_wait": float("nan")},
        {"max_wait": float("inf")},
        {"initial_wait": -1},
        {"attempts": 2.5},
        {"attempts": 0},
        {"attempts": True},
        {"sleep": "not callable"},
    ],
)
def test_impossible_retry_policies_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="RetryPolicy"):
        RetryPolicy(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("daily_limit", 2**31),
        ("min_wait_time", 10**9),
        ("max_in_flight", 0),
        ("max_in_flight", 10**6),
        ("sent_count", 2**40),
    ],
)
def test_limits_no_storage_could_hold_are_refused(field: str, value: int) -> None:
    smtp = SMTPSettings(host="localhost", use_tls=False)
    with pytest.raises(ConfigurationError, match=field):
        Account(email=ALICE, smtp=smtp, **{field: value})


@pytest.mark.parametrize("failover", [-1, 1.5, "2", True])
def test_impossible_failover_is_refused(failover: object) -> None:
    with pytest.raises(ConfigurationError, match="failover"):
        AccountPool(InMemoryStorage(), failover=failover)  # type: ignore[arg-type]


@pytest.mark.parametrize("lease", [0, -5, float("nan"), 10**9])
def test_impossible_lease_timeouts_are_refused(lease: float) -> None:
    with pytest.raises(ConfigurationError, match="lease_timeout"):
        AccountPool(InMemoryStorage(), lease_timeout=lease)


# -- secrets out of exception chains -------------------------------------------------


def _chain(error: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def test_a_refused_login_carries_the_reply_but_no_secret_in_its_chain(
    smtp_starttls_server: SMTPTestServer, client_ssl_context: object
) -> None:
    account = _account(smtp_starttls_server, password=WRONG_PASSWORD)
    transport = SMTPTransport(ssl_context=client_ssl_context)  # type: ignore[arg-type]

    with pytest.raises(AuthenticationError) as info:
        transport.send(account, _message("x"))

    error = info.value
    assert error.__context__ is None
    assert error.__cause__ is not None and error.__cause__.__traceback__ is None
    assert "535" in str(error.__cause__)
    text = "".join(
        traceback.TracebackException.from_exception(error, capture_locals=True).format()
    )
    assert WRONG_PASSWORD not in text
    assert all(WRONG_PASSWORD not in repr(e.args) for e in _chain(error))


def test_a_refused_token_leaves_no_token_in_the_chain(
    smtp_tls_server: SMTPTestServer, client_ssl_context: object
) -> None:
    account = Account(
        email=ALICE,
        smtp=SMTPSettings(
            host=smtp_tls_server.host,
            port=smtp_tls_server.port,
            use_tls=False,
            use_ssl=True,
        ),
        oauth2=OAuth2Credentials(access_token=REVOKED_TOKEN),
    )
    transport = SMTPTransport(ssl_context=client_ssl_context)  # type: ignore[arg-type]

    with pytest.raises(AuthenticationError) as info:
        transport.check(account)

    text = "".join(
        traceback.TracebackException.from_exception(
            info.value, capture_locals=True
        ).format()
    )
    assert REVOKED_TOKEN not in text


# -- helpers ------------------------------------------------------------------------


def _account(server: SMTPTestServer, password: str | None = None) -> Account:
    return Account(
        email=ALICE,
        smtp=SMTPSettings(
            host=server.host,
            port=server.port,
            use_tls=server.mode == "starttls",
            password=password,
            allow_insecure_auth=server.mode == "plain",
        ),
    )


def _message(text: str) -> EmailMessage:
    message = EmailMessage()
    message["To"] = RECIPIENT
    message["Subject"] = "Hello"
    message.set_content(text)
    return message
