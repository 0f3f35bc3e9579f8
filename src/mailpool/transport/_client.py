"""The SMTP client under SMTPTransport: smtplib with what it lacks.

- It knows when the message body has left (a lost reply after that may mean
  the message was delivered).
- A deadline bounds a whole attempt, not only each socket read: a server that
  trickles its replies cannot hold a worker for longer.
- AUTH sends UTF-8 credentials (RFC 4616), and one refused login is one
  failure (smtplib's ``login()`` retries a refused password with the next
  mechanism).
- The message is flattened once, as 7-bit unless the server offers 8BITMIME
  (or SMTPUTF8 for non-ASCII headers), and the Bcc header is left out.
"""

from __future__ import annotations

import base64
import copy as _copy
import email.generator
import email.policy
import io
import smtplib
import socket
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import TYPE_CHECKING

from mailpool.replies import Stage

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["Client", "SSLClient", "flatten"]

_MAX_CHALLENGES = 5
_STAGES = {
    "ehlo": Stage.EHLO,
    "helo": Stage.EHLO,
    "starttls": Stage.STARTTLS,
    "auth": Stage.AUTH,
    "mail": Stage.MAIL,
    "rcpt": Stage.RCPT,
    "data": Stage.DATA,
}


class _DeadlineReader(io.RawIOBase):
    """Reads the client's socket with a timeout that never passes its deadline."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: ReadableBuffer) -> int:
        sock = self._client.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        self._client.limit_timeout(sock)
        return sock.recv_into(buffer)


class Client(smtplib.SMTP):
    """smtplib.SMTP with body tracking, a deadline and UTF-8 AUTH.

    ``data()`` sends the DATA command as ``str`` (through ``putcmd``) and the
    body as ``bytes``: the first ``bytes`` sent inside it mark the body sent.
    """

    body_sent = False
    deadline: float | None = None
    """A :func:`time.monotonic` time after which no read or write may wait."""
    _in_data = False
    _in_auth = False
    stage: Stage = Stage.CONNECT
    """The stage of the session the next reply answers (for
    :mod:`mailpool.replies`)."""

    def start_attempt(self, seconds: float | None) -> None:
        """A new attempt: nothing sent yet, and ``seconds`` to finish it."""
        self.body_sent = False
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def limit_timeout(self, sock: socket.socket) -> None:
        """Shorten the socket timeout to what is left of the deadline."""
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the SMTP attempt ran past its deadline")
        sock.settimeout(left if self.timeout is None else min(self.timeout, left))

    # -- smtplib hooks ----------------------------------------------------------

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the SMTP attempt ran past its deadline")
            timeout = min(timeout, left)
        opened: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        return opened

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:
            # Replace smtplib's plain ``sock.makefile()`` (re-made after
            # STARTTLS) by a reader that honours the deadline on every recv.
            self.file = io.BufferedReader(_DeadlineReader(self))
        return super().getreply()

    def putcmd(self, cmd: str, args: str = "") -> None:
        if not self._in_auth:  # AUTH continuation lines are base64, not verbs
            self.stage = _STAGES.get(cmd.lower(), self.stage)
        super().putcmd(cmd, args)

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        self._in_data = True
        try:
            return super().data(msg)
        finally:
            self._in_data = False

    def send(self, s: ReadableBuffer | str) -> None:
        if self.sock is not None:
            self.limit_timeout(self.sock)
        super().send(s)
        if self._in_data and not isinstance(s, str):
            # All of it, the final "." included, is with the server now.
            self.body_sent = True

    def auth(
        self,
        mechanism: str,
        authobject: Callable[..., str],
        *,
        initial_response_ok: bool = True,
    ) -> tuple[int, bytes]:
        """smtplib's ``auth`` with UTF-8 instead of ASCII responses."""
        initial = authobject() if initial_response_ok else None
        if initial is not None:
            code, reply = self.docmd("AUTH", f"{mechanism.upper()} {_b64(initial)}")
        else:
            code, reply = self.docmd("AUTH", mechanism.upper())
        challenges = 0
        self._in_auth = True
        try:
            while code == 334:
                challenges += 1
                if challenges > _MAX_CHALLENGES:
                    raise smtplib.SMTPException(
                        "the server kept sending AUTH challenges"
                    )
                code, reply = self.docmd(_b64(authobject(base64.decodebytes(reply))))
        finally:
            self._in_auth = False
        if code in (235, 503):
            return code, reply
        raise smtplib.SMTPAuthenticationError(code, reply)

    def login_once(self, user: str, password: str) -> None:
        """Log in with one mechanism (PLAIN, else LOGIN): a refused password
        is refused once, not once per mechanism."""
        self.ehlo_or_helo_if_needed()
        if not self.has_extn("auth"):
            raise smtplib.SMTPNotSupportedError("the server offers no AUTH")
        offered = self.esmtp_features["auth"].upper().split()
        if "PLAIN" in offered:
            self.auth("PLAIN", lambda challenge=None: f"\0{user}\0{password}")
            return
        if "LOGIN" in offered:
            answers = iter((user, password))
            self.auth(
                "LOGIN",
                lambda challenge=None: next(answers, ""),
                initial_response_ok=False,
            )
            return
        raise smtplib.SMTPNotSupportedError(
            f"the server offers AUTH {' '.join(offered)}, none of PLAIN and LOGIN"
        )


class SSLClient(Client, smtplib.SMTP_SSL):
    """Implicit-TLS variant of :class:`Client` (``SMTP_SSL._get_socket``
    wraps the socket that :meth:`Client._get_socket` opens)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def flatten(client: Client, message: EmailMessage) -> tuple[bytes, list[str]]:
    """``message`` as the bytes to send to this server, and the MAIL options.

    Bcc and Resent-Bcc stay out. Non-ASCII headers go out as UTF-8 when the
    server offers SMTPUTF8 (RFC 2047 encoded words otherwise); 8-bit bodies go
    out as they are when it offers 8BITMIME and are re-encoded to 7 bits
    (base64 or quoted-printable) when it does not.
    """
    copy = _copy.copy(message)
    copy._headers = [  # type: ignore[attr-defined]
        (name, value)
        for name, value in message._headers  # type: ignore[attr-defined]
        if name.lower() not in ("bcc", "resent-bcc")
    ]
    client.ehlo_or_helo_if_needed()
    utf8 = client.has_extn("smtputf8") and not all(
        str(value).isascii()
        for _, value in copy._headers  # type: ignore[attr-defined]
    )
    eight_bit = client.has_extn("8bitmime")
    cte_type = "8bit" if eight_bit else "7bit"
    policy: email.policy.Policy
    if isinstance(message.policy, email.policy.EmailPolicy):
        policy = message.policy.clone(linesep="\r\n", cte_type=cte_type, utf8=utf8)
    else:  # compat32 keeps headers as given
        utf8 = False
        policy = message.policy.clone(linesep="\r\n", cte_type=cte_type)
    buffer = io.BytesIO()
    email.generator.BytesGenerator(buffer, policy=policy).flatten(copy)
    data = buffer.getvalue()
    options: list[str] = []
    if utf8:
        options.append("SMTPUTF8")
    if eight_bit and not data.isascii():
        options.append("BODY=8BITMIME")
    return data, options
