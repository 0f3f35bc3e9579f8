"""SMTPTransport: smtplib with STARTTLS, implicit TLS, AUTH and XOAUTH2.

The sessions live here; the client (deadline, UTF-8 AUTH, 7-bit or 8BITMIME
flattening) is in :mod:`mailpool.transport._client`, and the mapping of
smtplib's errors onto mailpool's error tree in :mod:`mailpool.transport._errors`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import smtplib
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage

from mailpool._validation import message_recipients
from mailpool.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectFailure,
    TemporarySendError,
)
from mailpool.models import Account
from mailpool.replies import DEFAULT_REPLIES, Reply, ReplyClass, ReplyRules, Stage
from mailpool.storage.base import Storage
from mailpool.transport._client import Client, SSLClient, flatten
from mailpool.transport._errors import login_name, map_errors, scrubbed, text_of
from mailpool.transport.oauth2 import RefreshTokenGrant, TokenKeeper, TokenProvider

__all__ = ["SMTPTransport"]

log = logging.getLogger("mailpool.transport")


@dataclass
class _Session:
    connection: Client
    fingerprint: int
    generation: int
    idle_since: float = 0.0
    reused: bool = False


class SMTPTransport:
    """Sends over SMTP with smtplib, keeping one idle session per account.

    Sessions are reused between sends, which saves the TCP, TLS and AUTH
    round trips of a new connection; call :meth:`close` (or close the pool) to
    end them. A session idle for more than 10 s is checked with ``NOOP``
    first, and a reused session that turns out closed before the message left
    is replaced by a new one at once (the server dropped an idle connection).

    :param timeout: seconds for connecting and for each SMTP reply.
    :param deadline: seconds for one whole attempt, from connecting (or
        reusing a session) to the final reply: a server that trickles its
        replies cannot hold a send, its worker and its lease for longer.
    :param ssl_context: TLS settings for STARTTLS and implicit TLS; the default
        verifies certificates against the system's CAs. Pass a context that
        trusts your private CA rather than turning verification off.
    :param reuse_connections: keep sessions open between sends.
    :param token_provider: renews the OAuth2 access tokens of accounts with a
        refresh token (:class:`~mailpool.transport.oauth2.RefreshTokenGrant`
        by default), shortly before they expire and once more when the
        server refuses one (the login is then tried once again). The pool
        saves renewed tokens through its storage (:meth:`bind_storage`).
    :param replies: what each SMTP reply means (:mod:`mailpool.replies`);
        :data:`~mailpool.replies.DEFAULT_REPLIES` by default. Pass
        ``ReplyRules([...])`` to extend or override the built-in rules.

    .. versionchanged:: 0.2
       ``replies``.
    """

    noop_after = 10.0
    """Seconds a session may sit idle before its next use is checked with NOOP."""
    token_refresh_margin = 300.0
    """Seconds before its expiry at which an OAuth2 access token is renewed."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        deadline: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        reuse_connections: bool = True,
        token_provider: TokenProvider | None = None,
        replies: ReplyRules | None = None,
    ) -> None:
        for name, value in (("timeout", timeout), ("deadline", deadline)):
            if not (isinstance(value, (int, float)) and math.isfinite(value)) or (
                value <= 0
            ):
                raise ConfigurationError(
                    f"SMTPTransport {name} must be a positive number of seconds "
                    f"(got {value!r})"
                )
        self.timeout = timeout
        self.deadline = deadline
        self._ssl_context = ssl_context
        self._reuse = reuse_connections
        self._idle: dict[str, list[_Session]] = {}
        self._generation = 0  # bumped by close(): older sessions are not kept
        self._lock = threading.Lock()
        self._tokens = TokenKeeper(token_provider or RefreshTokenGrant())
        self.replies = replies if replies is not None else DEFAULT_REPLIES

    def __repr__(self) -> str:
        return f"<SMTPTransport timeout={self.timeout} reuse={self._reuse}>"

    @property
    def token_provider(self) -> TokenProvider:
        """What renews OAuth2 access tokens."""
        return self._tokens.provider

    def bind_storage(self, storage: Storage, /) -> None:
        """Save renewed OAuth2 tokens (and rotated refresh tokens) through
        ``storage``, so that every worker sharing it uses them.
        :class:`~mailpool.AccountPool` calls it with its storage.

        .. versionadded:: 0.2
        """
        self._tokens.bind(storage)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context in use (created on first use when none was given)."""
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def send(self, account: Account, message: EmailMessage, /) -> Sequence[str]:
        """Send ``message`` from ``account``; see :meth:`Transport.send`."""
        recipients = message_recipients(message)
        deadline = time.monotonic() + self.deadline
        account = self._tokens.current(account)
        with scrubbed():
            session = self._checkout(account, deadline)
            try:
                refused = self._send_on(session, account, message, recipients)
            except TemporarySendError as exc:
                closed = isinstance(exc, ConnectFailure) or exc.smtp_code == 421
                if not (closed and session.reused) or session.connection.body_sent:
                    raise
                # The server closed the idle session before the message left.
                log.debug(
                    "reused session of %s was closed; reconnecting", account.email
                )
                session = self._open(account, deadline)
                refused = self._send_on(session, account, message, recipients)
        self._checkin(account, session)
        return tuple(refused)

    def _send_on(
        self,
        session: _Session,
        account: Account,
        message: EmailMessage,
        recipients: list[str],
    ) -> dict[str, tuple[int, bytes]]:
        client = session.connection
        client.body_sent = False
        with map_errors(account, client, self.replies), self._discard_on_error(session):
            data, options = flatten(client, message)
            refused = client.sendmail(account.email, recipients, data, options)
        return self._further_transactions(session, account, data, options, refused)

    def _further_transactions(
        self,
        session: _Session,
        account: Account,
        data: bytes,
        options: list[str],
        refused: dict[str, tuple[int, bytes]],
    ) -> dict[str, tuple[int, bytes]]:
        """Send the message again to the recipients refused only because the
        transaction had too many (``452 4.5.3``), until none is left.

        The message has left for the others by now: a failure here reports
        the rest as refused instead of raising (a retry would send it twice).
        """
        while pending := [
            address
            for address, (code, text) in refused.items()
            if self.replies.classify(Reply(code, text_of(text), Stage.RCPT))
            is ReplyClass.TOO_MANY_RECIPIENTS
        ]:
            client = session.connection
            client.body_sent = False
            try:
                more = client.sendmail(account.email, pending, data, options)
            except (smtplib.SMTPException, OSError) as exc:
                log.warning(
                    "further transaction of %s for %d recipients failed: %s",
                    account.email,
                    len(pending),
                    type(exc).__name__,
                )
                client.close()
                session.generation = -1  # not kept for reuse
                return refused
            if len(more) == len(pending):  # no progress: give up on them
                return refused
            refused = {a: r for a, r in refused.items() if a not in pending} | more
        return refused

    def check(self, account: Account, /, *, probe: str | None = None) -> str:
        """Connect and log in, then quit; see :meth:`Transport.check`.

        :param probe: also issue ``MAIL FROM`` (the account's address) and
            ``RCPT TO`` this address, then ``RSET``, without ``DATA``: this
            finds the sender-ownership and relay refusals a login does not.

        .. versionchanged:: 0.2
           ``probe``.
        """
        with scrubbed():
            session = self._open(account, time.monotonic() + self.deadline)
            if probe is not None:
                self._probe(session, account, probe)
        _quit(session.connection)
        account = self._tokens.current(account)
        settings = account.smtp
        how = "STARTTLS" if settings.use_tls else "TLS" if settings.use_ssl else "plain"
        login = login_name(account)
        done = f" and logged in as {login}" if login else " (no login configured)"
        if probe is not None:
            done += (
                f"; MAIL FROM {account.email} and RCPT TO {probe} were accepted "
                "(then reset: nothing was sent)"
            )
        return f"Connected to {settings.host}:{settings.port} ({how}){done}."

    def _probe(self, session: _Session, account: Account, probe: str) -> None:
        client = session.connection
        with map_errors(account, client, self.replies), self._discard_on_error(session):
            code, text = client.mail(account.email)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, text, account.email)
            code, text = client.rcpt(probe)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({probe: (code, text)})
            client.rset()

    def close(self) -> None:
        """Quit every idle session; sessions busy now are quit when done."""
        with self._lock:
            sessions = [s for stack in self._idle.values() for s in stack]
            self._idle.clear()
            self._generation += 1
        for session in sessions:
            _quit(session.connection)

    def _checkout(self, account: Account, deadline: float) -> _Session:
        fingerprint = _fingerprint(account)
        with self._lock:
            stack = self._idle.get(account.id, [])
            session = stack.pop() if stack else None
        if session is not None:
            fresh = time.monotonic() - session.idle_since < self.noop_after
            session.connection.deadline = deadline
            if session.fingerprint == fingerprint and (
                fresh or _alive(session.connection)
            ):
                session.reused = True
                return session
            _quit(session.connection)
        return self._open(account, deadline)

    def _checkin(self, account: Account, session: _Session) -> None:
        session.idle_since = time.monotonic()
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

    def _open(self, account: Account, deadline: float) -> _Session:
        """A new, logged-in session; an OAuth2 access token that expires soon
        is renewed first, and one the server refuses is renewed (or replaced
        by one another worker stored) and tried once more."""
        account, renewed = self._tokens.fresh(account, self.token_refresh_margin)
        try:
            return self._connect(account, deadline)
        except AuthenticationError as exc:
            if renewed or exc.smtp_code != 535 or not _uses_xoauth2(account):
                raise
            retry = self._tokens.after_refusal(account)
            if retry is None:
                raise
        log.info(
            "%s refused the OAuth2 access token of %s; trying a renewed one",
            account.smtp.host,
            account.email,
        )
        return self._connect(retry, deadline)

    def _connect(self, account: Account, deadline: float) -> _Session:
        settings = account.smtp
        _check_token_fresh(account)
        connection: Client = (
            SSLClient(timeout=self.timeout, context=self.ssl_context)
            if settings.use_ssl
            else Client(timeout=self.timeout)
        )
        connection.deadline = deadline
        # smtplib takes the TLS server name from the constructor's host, which
        # would also connect at once, before the deadline is set.
        connection._host = settings.host  # type: ignore[attr-defined]
        session = _Session(connection, _fingerprint(account), self._generation)
        with (
            map_errors(account, connection, self.replies),
            self._discard_on_error(session),
        ):
            code, greeting = connection.connect(settings.host, settings.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, greeting)
            connection.ehlo()
            if settings.use_tls:
                connection.starttls(context=self.ssl_context)
                connection.ehlo()
            _authenticate(connection, account)
        log.debug("opened SMTP session for %s", account.email)
        return session


def _check_token_fresh(account: Account) -> None:
    """Fail before connecting when the OAuth2 access token has expired (and
    could not be renewed)."""
    expiry = account.oauth2.token_expiry if account.oauth2 else None
    if expiry is not None and expiry <= datetime.now(timezone.utc):
        raise AuthenticationError(
            f"the OAuth2 access token of {account.email} expired at "
            f"{expiry.isoformat()}: store a fresh one, or a refresh token and "
            "client id so that it is renewed automatically (see docs/oauth2.md)",
            account_id=account.id,
        )


def _uses_xoauth2(account: Account) -> bool:
    return account.oauth2 is not None and account.oauth2.access_token is not None


def _authenticate(connection: Client, account: Account) -> None:
    login = login_name(account)
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
        connection.login_once(login, account.smtp.password.get_secret_value())


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
