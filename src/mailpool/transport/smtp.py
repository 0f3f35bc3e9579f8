"""SMTPTransport: smtplib with STARTTLS, implicit TLS, AUTH and XOAUTH2.

This is the only module that handles smtplib's exceptions; it maps them onto
mailpool's error tree (see :mod:`mailpool.errors`).
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import TYPE_CHECKING

from mailpool._validation import message_recipients
from mailpool.errors import (
    AuthenticationError,
    ConnectFailure,
    DeliveryUnknown,
    MessageRejected,
    SendError,
    TemporarySendError,
)
from mailpool.models import Account

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["SMTPTransport"]

log = logging.getLogger("mailpool.transport")


class _TrackedSMTP(smtplib.SMTP):
    """smtplib.SMTP that knows when the message body has left.

    Once the body is on the wire, a lost reply (timeout, disconnect) no longer
    means "not sent": the server may have queued the message. ``data()`` sends
    the DATA command as ``str`` (through ``putcmd``) and the body as ``bytes``.
    """

    body_sent = False
    _in_data = False

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        self._in_data = True  # SMTPTransport.send resets body_sent per message
        try:
            return super().data(msg)
        finally:
            self._in_data = False

    def send(self, s: ReadableBuffer | str) -> None:
        if self._in_data and not isinstance(s, str):
            self.body_sent = True
        super().send(s)


class _TrackedSMTP_SSL(_TrackedSMTP, smtplib.SMTP_SSL):
    """Implicit-TLS variant of :class:`_TrackedSMTP`."""


@dataclass
class _Session:
    connection: _TrackedSMTP
    fingerprint: int
    generation: int


class SMTPTransport:
    """Sends over SMTP with smtplib, keeping one idle session per account.

    Sessions are reused between sends (checked with ``NOOP`` first), which
    saves the TCP, TLS and AUTH round trips of a new connection; call
    :meth:`close` (or close the pool) to end them.

    :param timeout: seconds for connecting and for each SMTP reply.
    :param ssl_context: TLS settings for STARTTLS and implicit TLS; the default
        verifies certificates against the system's CAs. Pass a context that
        trusts your private CA rather than turning verification off.
    :param reuse_connections: keep sessions open between sends.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        reuse_connections: bool = True,
    ) -> None:
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._reuse = reuse_connections
        self._idle: dict[str, list[_Session]] = {}
        self._generation = 0  # bumped by close(): older sessions are not kept
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SMTPTransport timeout={self.timeout} reuse={self._reuse}>"

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context in use (created on first use when none was given)."""
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def send(self, account: Account, message: EmailMessage, /) -> Sequence[str]:
        """Send ``message`` from ``account``; see :meth:`Transport.send`."""
        session = self._checkout(account)
        session.connection.body_sent = False
        with _map_errors(account, session.connection), self._discard_on_error(session):
            refused = session.connection.send_message(
                message, from_addr=account.email, to_addrs=message_recipients(message)
            )
        self._checkin(account, session)
        return tuple(refused)

    def check(self, account: Account, /) -> str:
        """Connect and log in, then quit; see :meth:`Transport.check`."""
        _quit(self._open(account).connection)
        settings = account.smtp
        how = "STARTTLS" if settings.use_tls else "TLS" if settings.use_ssl else "plain"
        login = _login_name(account)
        done = f" and logged in as {login}" if login else " (no login configured)"
        return f"Connected to {settings.host}:{settings.port} ({how}){done}."

    def close(self) -> None:
        """Quit every idle session; sessions busy now are quit when done."""
        with self._lock:
            sessions = [s for stack in self._idle.values() for s in stack]
            self._idle.clear()
            self._generation += 1
        for session in sessions:
            _quit(session.connection)

    def _checkout(self, account: Account) -> _Session:
        fingerprint = _fingerprint(account)
        with self._lock:
            stack = self._idle.get(account.id, [])
            session = stack.pop() if stack else None
        if session is not None:
            if session.fingerprint == fingerprint and _alive(session.connection):
                return session
            _quit(session.connection)
        return self._open(account)

    def _checkin(self, account: Account, session: _Session) -> None:
        with self._lock:
            keep = self._reuse and session.generation == self._generation
            if keep:
                self._idle.setdefault(account.id, []).append(session)
        if not keep:
            _quit(session.connection)

    @contextlib.contextmanager
    def _discard_on_error(self, session: _Session) -> Iterator[None]:
        try:
            yield
        except BaseException:
            # The session's state is unknown: drop it without a polite QUIT,
            # which could wait a whole timeout on a stalled server.
            session.connection.close()
            raise

    def _open(self, account: Account) -> _Session:
        settings = account.smtp
        _check_token_fresh(account)
        with _map_errors(account):
            if settings.use_ssl:
                connection: _TrackedSMTP = _TrackedSMTP_SSL(
                    settings.host,
                    settings.port,
                    timeout=self.timeout,
                    context=self.ssl_context,
                )
            else:
                connection = _TrackedSMTP(
                    settings.host, settings.port, timeout=self.timeout
                )
            session = _Session(connection, _fingerprint(account), self._generation)
            with self._discard_on_error(session):
                connection.ehlo()
                if settings.use_tls:
                    connection.starttls(context=self.ssl_context)
                    connection.ehlo()
                _authenticate(connection, account)
        log.debug("opened SMTP session for %s", account.email)
        return session


def _login_name(account: Account) -> str | None:
    settings = account.smtp
    has_token = account.oauth2 is not None and account.oauth2.access_token is not None
    if settings.password is None and not has_token:
        return None
    return settings.username or account.email


def _check_token_fresh(account: Account) -> None:
    """Fail before connecting when the OAuth2 access token has expired."""
    expiry = account.oauth2.token_expiry if account.oauth2 else None
    if expiry is not None and expiry <= datetime.now(timezone.utc):
        raise AuthenticationError(
            f"the OAuth2 access token of {account.email} expired at "
            f"{expiry.isoformat()}: store a fresh one",
            account_id=account.id,
        )


def _authenticate(connection: smtplib.SMTP, account: Account) -> None:
    login = _login_name(account)
    if login is None:
        return
    oauth = account.oauth2
    if oauth is not None and oauth.access_token is not None:
        token = oauth.access_token.get_secret_value()
        initial = f"user={login}\x01auth=Bearer {token}\x01\x01"

        def xoauth2(challenge: bytes | None = None) -> str:
            # A challenge carries the server's error details; answer empty to
            # receive the final 5xx reply.
            return initial if challenge is None else ""

        connection.auth("XOAUTH2", xoauth2)
    else:
        assert account.smtp.password is not None
        connection.login(login, account.smtp.password.get_secret_value())


def _fingerprint(account: Account) -> int:
    """Changes when anything that shapes a session changes (never logged)."""
    settings = account.smtp
    secrets = (
        settings.password.get_secret_value() if settings.password else None,
        account.oauth2.access_token.get_secret_value()
        if account.oauth2 and account.oauth2.access_token
        else None,
    )
    return hash((settings.model_dump_json(), account.email, secrets))


def _alive(connection: smtplib.SMTP) -> bool:
    try:
        return connection.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _quit(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


@contextlib.contextmanager
def _map_errors(
    account: Account, connection: _TrackedSMTP | None = None
) -> Iterator[None]:
    """Turn smtplib, ssl and socket errors into mailpool's SendError tree."""
    server = f"{account.smtp.host}:{account.smtp.port}"
    aid = account.id
    try:
        try:
            yield
        except OSError as exc:  # smtplib's errors are OSErrors too
            lost_reply = not isinstance(exc, smtplib.SMTPResponseException)
            if connection is not None and connection.body_sent and lost_reply:
                raise DeliveryUnknown(
                    f"{server} received the message but its reply was lost "
                    f"({exc}): it may have been delivered, so it counts and is "
                    "not sent again",
                    account_id=aid,
                ) from exc
            raise
    except SendError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise AuthenticationError(
            f"{server} refused the login of {_login_name(account)}: "
            f"{_reply(exc.smtp_code, exc.smtp_error)}",
            smtp_code=exc.smtp_code,
            account_id=aid,
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        details = "; ".join(
            f"{address}: {_reply(code, text)}"
            for address, (code, text) in exc.recipients.items()
        )
        if any(400 <= code < 500 for code in codes):
            raise TemporarySendError(
                f"{server} refused every recipient, some only for now: {details}",
                smtp_code=codes[0],
                account_id=aid,
            ) from exc
        raise MessageRejected(
            f"{server} refused every recipient for good: {details}",
            recipients=exc.recipients,
            smtp_code=max(codes),
            account_id=aid,
        ) from exc
    except smtplib.SMTPDataError as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
        if 400 <= exc.smtp_code < 500:
            raise TemporarySendError(
                f"{server} deferred the message: {reply}",
                smtp_code=exc.smtp_code,
                account_id=aid,
            ) from exc
        raise MessageRejected(
            f"{server} refused the message: {reply}",
            smtp_code=exc.smtp_code,
            account_id=aid,
        ) from exc
    except smtplib.SMTPResponseException as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
        if exc.smtp_code in (530, 534, 535):
            raise AuthenticationError(
                f"{server} requires a login that {account.email} did not give "
                f"or was refused: {reply}",
                smtp_code=exc.smtp_code,
                account_id=aid,
            ) from exc
        if 400 <= exc.smtp_code < 500:
            raise TemporarySendError(
                f"{server} answered {reply}", smtp_code=exc.smtp_code, account_id=aid
            ) from exc
        raise SendError(
            f"{server} answered {reply}", smtp_code=exc.smtp_code, account_id=aid
        ) from exc
    except smtplib.SMTPServerDisconnected as exc:
        # smtplib reports a read timeout as a disconnect.
        what = (
            "did not answer in time"
            if "timed out" in str(exc)
            else ("closed the connection unexpectedly")
        )
        raise ConnectFailure(f"{server} {what}", account_id=aid) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise SendError(
            f"{server} does not support what is needed: {exc}", account_id=aid
        ) from exc
    except smtplib.SMTPException as exc:
        raise SendError(f"SMTP error with {server}: {exc}", account_id=aid) from exc
    except ssl.SSLCertVerificationError as exc:
        raise SendError(
            f"the TLS certificate of {server} could not be verified "
            f"({exc.verify_message}): for a private CA pass "
            "SMTPTransport(ssl_context=...) that trusts it",
            account_id=aid,
        ) from exc
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
        raise ConnectFailure(
            f"{server} closed the connection during the TLS handshake",
            account_id=aid,
        ) from exc
    except ssl.SSLError as exc:
        raise SendError(
            f"TLS with {server} failed ({exc.reason}): check that use_ssl is set "
            "for implicit TLS ports (465) and use_tls for STARTTLS ports (587)",
            account_id=aid,
        ) from exc
    except TimeoutError as exc:
        raise ConnectFailure(
            f"{server} did not answer in time", account_id=aid
        ) from exc
    except OSError as exc:
        raise ConnectFailure(f"cannot reach {server}: {exc}", account_id=aid) from exc
