"""The exceptions mailpool raises.

Every error derives from :class:`MailpoolError`; where the meaning matches a
builtin, the error also derives from it, so ``except ValueError`` or
``except KeyError`` keep working::

    MailpoolError
    ├── ConfigurationError (also ValueError)   bad settings, bad input, unknown URL,
    │                                          missing extra
    ├── StorageError                           names the file or database; the driver's
    │   │                                      error is chained as __cause__
    │   └── AccountNotFound (also KeyError)
    ├── NoAccountAvailable                     .reason, .retry_after
    └── SendError                              .account_id, .smtp_code, .reply_class
        ├── TemporarySendError                 4xx, disconnects, timeouts: retried,
        │   │                                  then failover
        │   └── ConnectFailure (also ConnectionError)
        ├── DeliveryUnknown                    reply lost after the body was sent:
        │                                      counted, no retry, no failover
        ├── AccountError                       the reply is about the account: failover
        │   ├── AccountBroken                  account -> status error
        │   │   └── AuthenticationError        530/534/535
        │   ├── AccountQuotaExceeded           held at its cap until the next reset
        │   └── AccountThrottled               cools down for a while
        └── MessageRejected                    the message or its recipients refused:
                                               .recipients; no retry, no failover

Whether the pool retries, fails over or gives up is decided by the exception type
alone. No error message or attribute ever holds a password or a token.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

__all__ = [
    "AccountBroken",
    "AccountError",
    "AccountNotFound",
    "AccountQuotaExceeded",
    "AccountThrottled",
    "AuthenticationError",
    "ConfigurationError",
    "ConnectFailure",
    "DeliveryUnknown",
    "MailpoolError",
    "MessageRejected",
    "NoAccountAvailable",
    "NoAccountReason",
    "SendError",
    "StorageError",
    "TemporarySendError",
]


class MailpoolError(Exception):
    """Base class of every error mailpool raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes would be lost by Exception's default pickling,
        # which matters for multiprocessing and task queues.
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(
    cls: type[MailpoolError], args: tuple[Any, ...], state: dict[str, Any]
) -> MailpoolError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigurationError(MailpoolError, ValueError):
    """Invalid settings or input: the message says what to fix.

    Raised for invalid addresses, impossible SMTP settings, CR/LF in header
    values, duplicate accounts, unknown storage URLs and missing optional extras.
    Nothing stored is changed when it is raised.

    :param problems: for invalid model input, ``(field, problem)`` pairs such as
        ``("smtp.port", "Input should be less than or equal to 65535")``.
    """

    def __init__(
        self, message: str, *, problems: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class StorageError(MailpoolError):
    """A storage backend failed; ``location`` names the file or database.

    The driver's own exception, when there is one, is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location


class AccountNotFound(StorageError, KeyError):
    """No stored account has the given id or email address."""

    def __init__(self, key: str, *, location: str | None = None) -> None:
        super().__init__(f"no account with id or email {key!r}", location=location)
        self.key = key

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message; keep it a plain sentence.
        return str(self.args[0])


class NoAccountReason(str, enum.Enum):
    """Why :class:`NoAccountAvailable` was raised."""

    NO_ACCOUNTS = "no_accounts"
    """The pool's scope holds no account at all."""
    ALL_INACTIVE = "all_inactive"
    """Every account in scope is inactive, pending or in error."""
    ALL_AT_LIMIT = "all_at_limit"
    """Every active account has reached its daily limit."""
    ALL_WAITING = "all_waiting"
    """Every active account with quota left is inside its minimum wait."""
    ALL_BUSY = "all_busy"
    """Every active account with quota left has ``max_in_flight`` sends in
    flight (``retry_after``: when the oldest abandoned one would expire)."""
    ALL_PAUSED = "all_paused"
    """Every other active account is held at its provider's quota or cooling
    down after a throttling reply (``retry_after``: when the first pause ends).

    .. versionadded:: 0.2"""


class NoAccountAvailable(MailpoolError):
    """No account in the pool's scope could be claimed for a send.

    :param reason: why, as a :class:`NoAccountReason`.
    :param retry_after: seconds until an account may become available again
        (the shortest remaining wait, or the time until the daily counts roll
        over), or ``None`` when waiting will not help.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: NoAccountReason,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class SendError(MailpoolError):
    """Sending through one account failed for good.

    :param account_id: the account the send went through, when known.
    :param smtp_code: the SMTP reply code, when the server sent one.
    :param reply_class: what the reply meant (a
        :class:`~mailpool.replies.ReplyClass` value such as
        ``"account_quota"``), when a reply was classified.
    """

    def __init__(
        self,
        message: str,
        *,
        account_id: str | None = None,
        smtp_code: int | None = None,
        reply_class: str | None = None,
    ) -> None:
        super().__init__(message)
        self.account_id = account_id
        self.smtp_code = smtp_code
        self.reply_class = reply_class


class TemporarySendError(SendError):
    """A transient failure (4xx reply, disconnect, timeout): retried, then failover."""


class ConnectFailure(TemporarySendError, ConnectionError):
    """The SMTP server could not be reached, or the connection dropped."""


class DeliveryUnknown(SendError):
    """The message was handed to the server but its answer was lost.

    The connection dropped or timed out after the message body was sent, so the
    server may have accepted it. The pool keeps the unit of quota it reserved
    (the message may count) and neither retries nor fails over, which could
    deliver it twice. Check the recipient's side before sending it again.
    """


class AccountError(SendError):
    """The server's reply is about the account, not the message: another
    account may deliver it, so the pool fails over.

    .. versionadded:: 0.2
    """


class AccountBroken(AccountError):
    """The account cannot send as configured: refused credentials, a sender
    it does not own, relaying denied to it, basic authentication turned off.

    The pool sets the account's status to ``error`` with the reason and
    fails over.

    .. versionadded:: 0.2
    """


class AccountQuotaExceeded(AccountError):
    """The provider says the account reached its own sending quota (Gmail
    ``550 5.4.5 Daily user sending quota exceeded``), even when the local
    count is lower.

    The pool holds the account at its cap until its next daily reset and
    fails over.

    .. versionadded:: 0.2
    """


class AccountThrottled(AccountError):
    """The provider asks the account to slow down (``421 4.7.0``,
    ``450 4.7.1``, Microsoft ``432 4.3.2``).

    The pool lets the account cool down (stored, so every worker respects
    it) and fails over.

    .. versionadded:: 0.2
    """


class AuthenticationError(AccountBroken):
    """The server refused the account's credentials (530, 534, 535).

    The pool marks the account ``error`` with the reason and fails over.

    .. versionchanged:: 0.2
       Derives from :class:`AccountBroken`.
    """


class MessageRejected(SendError):
    """The server refused the message or its recipients for good (a
    ``recipient`` or ``message`` reply, see :mod:`mailpool.replies`).

    Another account would get the same answer, so the pool neither retries nor
    fails over. ``recipients`` lists the refused addresses (empty when the whole
    message was refused at DATA).
    """

    def __init__(
        self,
        message: str,
        *,
        recipients: Iterable[str] = (),
        account_id: str | None = None,
        smtp_code: int | None = None,
        reply_class: str | None = None,
    ) -> None:
        super().__init__(
            message,
            account_id=account_id,
            smtp_code=smtp_code,
            reply_class=reply_class,
        )
        self.recipients = tuple(recipients)
