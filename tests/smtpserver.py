"""A real, in-process SMTP server for the test suite.

The server is built on aiosmtpd and listens on 127.0.0.1 only, on a free port
chosen by the kernel.  It runs its own event loop in a background thread, so
blocking clients (smtplib, the library under test) can talk to it from the
test thread.

Faults are injected through the server itself, never by patching the client:

* :meth:`SMTPTestServer.fail_next` answers a command with a given reply,
* :meth:`SMTPTestServer.drop_next` closes the TCP connection without replying,
* :meth:`SMTPTestServer.stall_next` stays silent for a while, then answers,
* :meth:`SMTPTestServer.hold_next` stays silent until the test releases it,
* :meth:`SMTPTestServer.reject_recipient` refuses one address permanently.

Fault points are SMTP commands (``EHLO``, ``HELO``, ``MAIL``, ``RCPT``,
``DATA``, ``AUTH``, ``NOOP``, ``RSET``, ``STARTTLS``, ``QUIT``) plus two
pseudo-commands: ``CONNECT`` (the greeting sent when a client connects) and
``DATA_END`` (the reply to the end of the message content, after ``354``).

``stall_next`` and ``hold_next`` return a :class:`Hold`: its ``reached`` event
is set once the server is silent at that point, and ``release()`` lets it
answer, so a test can synchronize with the server without sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import email.policy
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "FAULT_POINTS",
    "MAX_STALL_SECONDS",
    "OAUTH_TOKENS",
    "USERS",
    "Hold",
    "ReceivedMessage",
    "SMTPTestServer",
]

USERS: Mapping[str, str] = {
    "alice@example.com": "alice-pass",
    "bob@example.com": "bob-pass",
    "carol@example.com": "carol-pass",
}
"""Accounts (username -> password) the shared fixtures accept for AUTH."""

OAUTH_TOKENS: Mapping[str, str] = {"alice@example.com": "ya29.good-token"}
"""Bearer tokens (username -> token) the implicit-TLS fixture accepts."""

FAULT_POINTS: frozenset[str] = frozenset(
    {
        "CONNECT",
        "EHLO",
        "HELO",
        "MAIL",
        "RCPT",
        "DATA",
        "DATA_END",
        "AUTH",
        "NOOP",
        "RSET",
        "STARTTLS",
        "QUIT",
    }
)
"""Where faults can be injected (see the module docstring)."""

MAX_STALL_SECONDS = 30.0
"""Longest silence of a stall or hold, so a test cannot hang."""

SERVER_HOSTNAME = "mx.mailpool.test"
XOAUTH2_FAILURE = "535 5.7.8 Username and Password not accepted"

_HOST = "127.0.0.1"
_READY_TIMEOUT = 10.0
_SHUTDOWN_TIMEOUT = 5.0
_IDLE_TIMEOUT = 60.0
_DROP_GRACE = 5.0
_REACH_TIMEOUT = 10.0


@dataclass(frozen=True)
class ReceivedMessage:
    """A message the server accepted (it answered 250 to the end of DATA).

    ``message`` is parsed with ``email.policy.default`` after CRLF line endings
    were turned into ``\\n`` (so ``get_content()`` compares equal to what was
    passed to ``set_content()``); ``raw`` holds the bytes exactly as received,
    dot-unstuffed.  ``auth_user`` is who authenticated on that session.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    auth_user: str | None
    raw: bytes = field(default=b"", repr=False)
    received_at: float = 0.0
    """``time.time()`` when the end of DATA arrived (before the 250 reply)."""
    mail_options: tuple[str, ...] = ()
    """The ESMTP parameters of MAIL FROM (e.g. ``BODY=8BITMIME``)."""


class Hold:
    """The handle of a :meth:`~SMTPTestServer.hold_next` or ``stall_next`` fault.

    The server sets :attr:`reached` when the command arrives, then stays silent
    until :meth:`release` is called (or its time is up) and answers normally.
    One handle covers every command of its ``times``; releasing it also ends
    the silences still to come.  Closing the connection ends the silence too.
    """

    def __init__(self, point: str, seconds: float) -> None:
        self.point = point
        self.seconds = seconds
        self.reached = threading.Event()
        self._lock = threading.Lock()
        self._released = False
        self._wakeups: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return (
            f"<Hold {self.point} reached={self.reached.is_set()} "
            f"released={self.released}>"
        )

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        with self._lock:
            return self._released

    def release(self) -> None:
        """Let the server answer now, and at once if the command comes later."""
        with self._lock:
            self._released = True
            wakeups, self._wakeups = self._wakeups, []
        for wake in wakeups:
            wake()

    def wait_reached(self, timeout: float = _REACH_TIMEOUT) -> None:
        """Block until the server is holding the command; TimeoutError if not."""
        if not self.reached.wait(timeout):
            raise TimeoutError(f"the server never reached {self.point}")

    async def _pause(self) -> None:
        """Called on the server loop: stay silent until released or time is up."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(woken.set)

        with self._lock:
            released = self._released
            if not released:
                self._wakeups.append(wake)
        self.reached.set()
        if released:
            return
        try:
            await asyncio.wait_for(woken.wait(), self.seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._wakeups.remove(wake)


@dataclass(frozen=True)
class _Fault:
    kind: Literal["fail", "drop", "pause"]
    reply: str = ""
    hold: Hold | None = None


def _check_point(command: str) -> str:
    point = command.upper()
    if point not in FAULT_POINTS:
        allowed = ", ".join(sorted(FAULT_POINTS))
        raise ValueError(f"unknown fault point {command!r}; expected one of {allowed}")
    return point


def _check_times(times: int) -> None:
    if times < 1:
        raise ValueError(f"times must be >= 1, got {times}")


def _check_reply(reply: str) -> None:
    code = reply[:3]
    if not (len(reply) >= 3 and code.isdigit() and reply[0] in "2345"):
        raise ValueError(f"reply must start with an SMTP status code: {reply!r}")
    if len(reply) > 3 and reply[3] not in " -":
        raise ValueError(f"reply must start with an SMTP status code: {reply!r}")


class _QuietSession(Session):
    """aiosmtpd's Session logs a deprecation warning on every ``login_data`` use."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _FaultySMTP(SMTP):
    """One SMTP session; consults the owner's fault queues before each command."""

    def __init__(self, owner: SMTPTestServer, handler: Any, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(handler, **kwargs)

    # -- plumbing -------------------------------------------------------------

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    async def check_auth_needed(self, caller_method: str) -> bool:
        # Enforced here rather than with SMTP(auth_required=True): aiosmtpd warns
        # (UserWarning) about auth_required without auth_require_tls, and it
        # counts only STARTTLS as TLS, so implicit TLS would always warn.
        assert self.session is not None
        if self._owner.require_auth and not self.session.authenticated:
            await self.push("530 5.7.0 Authentication required")
            return True
        return False

    def connection_lost(self, error: Exception | None) -> None:
        self._owner._forget(self)
        super().connection_lost(error)

    def abort_connection(self) -> None:
        """Close the TCP connection at once, without sending anything more."""
        transport = self.transport
        if transport is None:
            return
        if isinstance(transport, asyncio.WriteTransport):
            # For TLS (implicit or STARTTLS) this aborts the underlying socket.
            transport.abort()
        else:  # pragma: no cover - every stream transport is a WriteTransport
            transport.close()

    async def drop(self) -> None:
        """Abort the connection and wait for the session task to be cancelled."""
        self.abort_connection()
        # connection_lost() cancels the task running this coroutine; returning
        # normally would make aiosmtpd write to (and drain) a dead transport.
        await asyncio.sleep(_DROP_GRACE)

    async def close_and_wait(self) -> None:
        """Close the connection gracefully and wait for the task's cancellation."""
        if self.transport is not None:
            self.transport.close()
        await asyncio.sleep(_DROP_GRACE)

    async def apply_fault(self, point: str) -> bool:
        """Run the next fault queued for ``point``.

        Returns True when the fault replaced the normal handling of the command.
        """
        self._owner._note_command(point)
        fault = self._owner._take_fault(point)
        if fault is None:
            return False
        if fault.hold is not None:
            await fault.hold._pause()
            return False
        if fault.kind == "drop":
            await self.drop()
            return True
        await self.push(fault.reply)
        if (point == "CONNECT" or fault.reply.startswith("421")) and (
            self.transport is not None
        ):
            # 421 means "closing the channel" (RFC 5321 3.8); so does a
            # refused greeting here.
            self.transport.close()
        return True

    # -- fault points ---------------------------------------------------------

    async def _handle_client(self) -> None:
        if await self.apply_fault("CONNECT"):
            return
        await super()._handle_client()

    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self.apply_fault("EHLO"):
            # aiosmtpd offers 8BITMIME unless it decodes DATA as text: flip
            # that flag just while it builds the EHLO reply.
            decode_data = self._decode_data
            self._decode_data = decode_data or not self._owner.offer_8bitmime
            try:
                await super().smtp_EHLO(hostname)
            finally:
                self._decode_data = decode_data

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self.apply_fault("HELO"):
            await super().smtp_HELO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self.apply_fault("MAIL"):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self.apply_fault("RCPT"):
            await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if not await self.apply_fault("DATA"):
            await super().smtp_DATA(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        self._owner._count_auth_attempt()
        if not await self.apply_fault("AUTH"):
            await super().smtp_AUTH(arg)

    async def smtp_NOOP(self, arg: str) -> None:
        if not await self.apply_fault("NOOP"):
            await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg: str) -> None:
        if not await self.apply_fault("RSET"):
            await super().smtp_RSET(arg)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if not await self.apply_fault("STARTTLS"):
            await super().smtp_STARTTLS(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        if not await self.apply_fault("QUIT"):
            await super().smtp_QUIT(arg)

    # -- AUTH XOAUTH2 (aiosmtpd discovers auth_* methods) -----------------------

    async def auth_XOAUTH2(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            response = await self.challenge_auth("", encode_to_b64=False)
            if response is MISSING:  # challenge_auth already sent a 501
                return AuthResult(success=False, handled=True)
            assert isinstance(response, bytes)
            blob = response
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        # user=<user>^Aauth=Bearer <token>^A^A
        fields = blob.decode("utf-8", errors="replace").split("\x01")
        user = next((f[5:] for f in fields if f.startswith("user=")), None)
        auth = next((f[5:] for f in fields if f.startswith("auth=")), "")
        scheme, _sep, token = auth.partition(" ")
        if (
            scheme.lower() == "bearer"
            and token
            and user is not None
            and self._owner._accepts_token(user, token)
        ):
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False, message=XOAUTH2_FAILURE)


class _Handler:
    """aiosmtpd handler hooks: recipient rejection and message recording."""

    def __init__(self, owner: SMTPTestServer) -> None:
        self._owner = owner

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        rejection = self._owner._rejection_for(address)
        if rejection is not None:
            return rejection
        limit = self._owner.max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        assert isinstance(server, _FaultySMTP)
        received_at = time.time()
        self._owner._note_command("DATA_END")
        fault = self._owner._take_fault("DATA_END")
        if fault is not None:
            if fault.hold is not None:
                await fault.hold._pause()
            elif fault.kind == "drop":
                await server.drop()
                return "451 4.3.0 Connection dropped"  # not reached in practice
            else:
                if fault.reply.startswith("421"):
                    await server.push(fault.reply)
                    await server.close_and_wait()
                return fault.reply
        raw = envelope.original_content or b""
        parser = BytesParser(policy=email.policy.default)
        message: EmailMessage = parser.parsebytes(raw.replace(b"\r\n", b"\n"))
        auth_user = session.auth_data if session.authenticated else None
        self._owner._record(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                message=message,
                auth_user=auth_user if isinstance(auth_user, str) else None,
                raw=raw,
                received_at=received_at,
                mail_options=tuple(envelope.mail_options),
            )
        )
        return "250 OK"


class _Controller(Controller):
    """aiosmtpd Controller on 127.0.0.1 with a kernel-chosen port."""

    def __init__(
        self,
        owner: SMTPTestServer,
        handler: _Handler,
        *,
        ssl_context: ssl.SSLContext | None,
        **smtp_kwargs: Any,
    ) -> None:
        self._owner = owner
        super().__init__(
            handler,
            hostname=_HOST,
            port=0,
            ready_timeout=_READY_TIMEOUT,
            ssl_context=ssl_context,
            **smtp_kwargs,
        )

    def factory(self) -> SMTP:
        # Called on the server loop once per accepted TCP connection.
        smtp = _FaultySMTP(
            self._owner, self.handler, loop=self.loop, **self.SMTP_kwargs
        )
        self._owner._register(smtp)
        return smtp

    def _trigger_server(self) -> None:
        # The listening socket exists by now; learn the port the kernel chose
        # (the base class would try to connect to port 0).
        server = cast(asyncio.Server, self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]

    async def close_connections(self) -> None:
        """Stop listening, abort every session and wait for their tasks."""
        if self.server is not None:
            self.server.close()
        for smtp in self._owner._active_sessions():
            smtp.abort_connection()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        if pending:
            await asyncio.wait(pending, timeout=_SHUTDOWN_TIMEOUT)
        # Let transports run their connection_lost callbacks.
        for _ in range(3):
            await asyncio.sleep(0)


class SMTPTestServer:
    """A real SMTP server on 127.0.0.1 with fault injection.

    ``mode`` is ``"plain"`` (no TLS; AUTH offered in clear text so a client
    that opts into insecure auth can be tested), ``"starttls"`` (STARTTLS
    offered; AUTH only after it) or ``"tls"`` (implicit TLS from the first
    byte).  ``tls_context`` is the server-side context, required for the TLS
    modes.  AUTH PLAIN and LOGIN accept ``users``; AUTH XOAUTH2 is offered only
    when ``oauth_tokens`` or ``oauth_validator`` is given, and accepts the
    token ``oauth_tokens`` maps the user to (:meth:`set_oauth_token` changes
    it at run time), or any token ``oauth_validator(user, token)`` accepts.
    With ``require_auth`` MAIL/RCPT/DATA are refused with 530 until the
    session has authenticated.

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    host: str
    port: int
    messages: list[ReceivedMessage]

    def __init__(
        self,
        *,
        mode: Literal["plain", "starttls", "tls"] = "plain",
        users: Mapping[str, str] | None = None,
        require_auth: bool = False,
        tls_context: ssl.SSLContext | None = None,
        oauth_tokens: Mapping[str, str] | None = None,
        oauth_validator: Callable[[str, str], bool] | None = None,
        offer_8bitmime: bool = True,
        offer_smtputf8: bool = False,
    ) -> None:
        if mode not in ("plain", "starttls", "tls"):
            raise ValueError(f"unknown mode {mode!r}")
        if mode != "plain" and tls_context is None:
            raise ValueError(f"mode {mode!r} needs a server-side tls_context")
        self.mode = mode
        self.users: Mapping[str, str] = dict(users or {})
        self.require_auth = require_auth
        self.tls_context = tls_context
        self.oauth_tokens: Mapping[str, str] = dict(oauth_tokens or {})
        self.oauth_validator = oauth_validator
        self._offer_xoauth2 = oauth_tokens is not None or oauth_validator is not None
        self.offer_8bitmime = offer_8bitmime
        self.offer_smtputf8 = offer_smtputf8
        self.host = _HOST
        self.port = 0
        self.messages = []
        self._lock = threading.Lock()
        self._message_arrived = threading.Condition(self._lock)
        self._faults: dict[str, collections.deque[_Fault]] = {}
        self._rejections: dict[str, str] = {}
        self._sessions: set[_FaultySMTP] = set()
        self._connections = 0
        self._commands: list[str] = []
        self._auth_attempts = 0
        self._controller: _Controller | None = None
        self.max_recipients: int | None = None
        """Recipients one transaction may have; the next are answered
        ``452 4.5.3 Too many recipients`` (None: no limit)."""

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start listening; :attr:`port` is valid afterwards."""
        if self._controller is not None:
            raise RuntimeError("server already running")
        smtp_kwargs: dict[str, Any] = {
            "server_hostname": SERVER_HOSTNAME,
            "ident": "mailpool test ESMTP",
            "timeout": _IDLE_TIMEOUT,
            "authenticator": self._authenticate,
            "enable_SMTPUTF8": self.offer_smtputf8,
        }
        if not self._offer_xoauth2:
            smtp_kwargs["auth_exclude_mechanism"] = ["XOAUTH2"]
        ssl_context: ssl.SSLContext | None = None
        if self.mode == "plain":
            smtp_kwargs["auth_require_tls"] = False
        elif self.mode == "starttls":
            smtp_kwargs["tls_context"] = self.tls_context
            smtp_kwargs["require_starttls"] = False
            smtp_kwargs["auth_require_tls"] = True
        else:
            # aiosmtpd counts only STARTTLS as TLS: without this, AUTH would
            # never be offered on an implicit-TLS connection.
            ssl_context = self.tls_context
            smtp_kwargs["auth_require_tls"] = False
        controller = _Controller(
            self, _Handler(self), ssl_context=ssl_context, **smtp_kwargs
        )
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)
            if not controller.loop.is_closed():
                controller.loop.close()
            raise
        self.port = controller.port
        self._controller = controller
        with self._lock:
            # Controller.start() opened a probe connection; it is not a client.
            self._connections = 0
            self._commands.clear()

    def stop(self) -> None:
        """Close every connection, stop the loop and join its thread."""
        controller = self._controller
        if controller is None:
            return
        self._controller = None
        future = asyncio.run_coroutine_threadsafe(
            controller.close_connections(), controller.loop
        )
        try:
            future.result(timeout=_SHUTDOWN_TIMEOUT + 1.0)
        except Exception:  # pragma: no cover - best effort before the hard stop
            future.cancel()
        controller.stop()

    def __enter__(self) -> SMTPTestServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- observation ------------------------------------------------------------

    @property
    def commands(self) -> list[str]:
        """Every fault point reached so far (commands, CONNECT, DATA_END), in order."""
        with self._lock:
            return list(self._commands)

    @property
    def connections(self) -> int:
        """TCP sessions opened by clients since :meth:`start`."""
        with self._lock:
            return self._connections

    @property
    def auth_attempts(self) -> int:
        """AUTH commands received (including failed and fault-injected ones)."""
        with self._lock:
            return self._auth_attempts

    def wait_for_messages(
        self, count: int, timeout: float = 5.0
    ) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages arrived; return a snapshot."""
        deadline = time.monotonic() + timeout
        with self._message_arrived:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} messages, got {len(self.messages)}"
                    )
                self._message_arrived.wait(remaining)
            return list(self.messages)

    # -- fault injection --------------------------------------------------------

    def fail_next(self, command: str, reply: str, *, times: int = 1) -> None:
        """Answer the next ``times`` ``command``s with ``reply`` (e.g. ``"451 ..."``).

        A 421 reply, or any reply at ``CONNECT``, also closes the connection.
        """
        _check_reply(reply)
        self._queue(command, _Fault("fail", reply=reply), times)

    def drop_next(self, command: str, *, times: int = 1) -> None:
        """Close the TCP connection, without replying, when ``command`` arrives."""
        self._queue(command, _Fault("drop"), times)

    def stall_next(self, command: str, seconds: float, *, times: int = 1) -> Hold:
        """Stay silent ``seconds`` when ``command`` arrives, then answer normally.

        The returned :class:`Hold` tells when the stall began and can end it early.
        """
        if not 0 <= seconds <= MAX_STALL_SECONDS:
            raise ValueError(f"seconds must be within 0..{MAX_STALL_SECONDS}")
        return self._pause_next(command, seconds, times)

    def hold_next(self, command: str) -> Hold:
        """Stay silent when ``command`` arrives until the test releases the hold.

        ``hold.wait_reached()`` returns once the server is silent there;
        ``hold.release()`` makes it answer normally.  An unreleased hold ends
        after :data:`MAX_STALL_SECONDS`, or when the connection closes.
        """
        return self._pause_next(command, MAX_STALL_SECONDS, 1)

    def _pause_next(self, command: str, seconds: float, times: int) -> Hold:
        hold = Hold(_check_point(command), seconds)
        self._queue(command, _Fault("pause", hold=hold), times)
        return hold

    def set_oauth_token(self, user: str, token: str | None) -> None:
        """Accept ``token`` (only it; ``None``: none) for ``user``'s XOAUTH2
        logins from now on."""
        with self._lock:
            tokens = dict(self.oauth_tokens)
            if token is None:
                tokens.pop(user, None)
            else:
                tokens[user] = token
            self.oauth_tokens = tokens

    def reject_recipient(
        self, address: str, reply: str = "550 5.1.1 No such user"
    ) -> None:
        """Refuse RCPT for ``address`` (case-insensitive), on every attempt."""
        _check_reply(reply)
        with self._lock:
            self._rejections[address.lower()] = reply

    def _queue(self, command: str, fault: _Fault, times: int) -> None:
        point = _check_point(command)
        _check_times(times)
        with self._lock:
            self._faults.setdefault(point, collections.deque()).extend([fault] * times)

    # -- called from the server thread ------------------------------------------

    def _take_fault(self, point: str) -> _Fault | None:
        with self._lock:
            queue = self._faults.get(point)
            return queue.popleft() if queue else None

    def _rejection_for(self, address: str) -> str | None:
        with self._lock:
            return self._rejections.get(address.lower())

    def _record(self, message: ReceivedMessage) -> None:
        with self._message_arrived:
            self.messages.append(message)
            self._message_arrived.notify_all()

    def _note_command(self, point: str) -> None:
        with self._lock:
            self._commands.append(point)

    def _register(self, smtp: _FaultySMTP) -> None:
        with self._lock:
            self._connections += 1
            self._sessions.add(smtp)

    def _forget(self, smtp: _FaultySMTP) -> None:
        with self._lock:
            self._sessions.discard(smtp)

    def _active_sessions(self) -> list[_FaultySMTP]:
        with self._lock:
            return list(self._sessions)

    def _accepts_token(self, user: str, token: str) -> bool:
        with self._lock:
            expected = self.oauth_tokens.get(user)
            validator = self.oauth_validator
        if token == expected:
            return True
        return validator is not None and validator(user, token)

    def _count_auth_attempt(self) -> None:
        with self._lock:
            self._auth_attempts += 1

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        # handled=False makes aiosmtpd send "535 5.7.8 ..."; with the default
        # handled=True it sends nothing and the client waits forever.
        failure = AuthResult(success=False, handled=False)
        if not isinstance(auth_data, LoginPassword):
            return failure
        try:
            login = auth_data.login.decode("utf-8")
            password = auth_data.password.decode("utf-8")
        except UnicodeDecodeError:
            return failure
        expected = self.users.get(login)
        if expected is None or password != expected:
            return failure
        return AuthResult(success=True, auth_data=login)
