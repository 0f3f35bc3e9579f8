"""The transport contract: how a message leaves through one account."""

from __future__ import annotations

from collections.abc import Sequence
from email.message import EmailMessage
from typing import Protocol, runtime_checkable

from mailpool.models import Account

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """**Protocol**: sends a message through one account.

    Errors are raised as :class:`~mailpool.SendError` subclasses; their type
    alone tells the pool whether to retry (:class:`~mailpool.TemporarySendError`),
    fail over, or give up (:class:`~mailpool.MessageRejected`).
    """

    def send(self, account: Account, message: EmailMessage, /) -> Sequence[str]:
        """Send ``message`` from ``account`` (envelope sender = its email).

        :returns: the recipients the server refused while accepting the others.
        :raises SendError: or a subclass, when nothing was sent.
        """
        ...

    def check(self, account: Account, /) -> str:
        """Connect and log in without sending.

        A transport that can also test the envelope accepts a keyword
        ``probe`` (see :meth:`SMTPTransport.check`), which
        ``AccountPool.test_connection(..., deep=True)`` passes.

        :returns: a sentence describing what worked.
        :raises SendError: or a subclass, describing what failed.
        """
        ...

    def close(self) -> None:
        """Close every open connection. Idempotent."""
        ...
