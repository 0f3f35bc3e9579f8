"""Helpers for testing code that uses mailpool, without an SMTP server.

.. code-block:: python

    from mailpool import AccountPool, InMemoryStorage
    from mailpool.testing import ManualClock, RecordingTransport

    transport = RecordingTransport()
    pool = AccountPool(storage, transport=transport, clock=ManualClock())
    pool.send_mail(subject="Hi", body="...", to=["bob@example.org"])
    assert transport.sent[0].message["Subject"] == "Hi"
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import NamedTuple

from mailpool.models import Account

__all__ = ["ManualClock", "RecordingTransport", "SentMessage"]


class SentMessage(NamedTuple):
    """One message a :class:`RecordingTransport` accepted."""

    account: Account
    message: EmailMessage


class RecordingTransport:
    """A :class:`~mailpool.Transport` that keeps messages instead of sending.

    Thread-safe. ``sent`` lists what was "sent", in order.
    """

    def __init__(self) -> None:
        self.sent: list[SentMessage] = []
        self._lock = threading.Lock()

    def send(self, account: Account, message: EmailMessage, /) -> Sequence[str]:
        """Record the message; refuses no recipient."""
        with self._lock:
            self.sent.append(SentMessage(account, message))
        return ()

    def check(self, account: Account, /, *, probe: str | None = None) -> str:
        """Always succeeds (``probe``: a deep test, see
        :meth:`SMTPTransport.check`)."""
        deep = "" if probe is None else f" (deep, probe {probe})"
        return f"Recorded connection test for {account.email}{deep}."

    def close(self) -> None:
        """Nothing to close."""


class ManualClock:
    """A clock that moves only when told: pass it as ``AccountPool(clock=...)``.

    :param start: the initial time (aware); 2026-01-01 09:00 UTC by default.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.current

    def advance(self, seconds: float = 0.0, *, days: int = 0) -> datetime:
        """Move the clock forward and return the new time."""
        with self._lock:
            self.current += timedelta(days=days, seconds=seconds)
            return self.current

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` at once: pass it as ``AccountPool(sleep=...)``
        so that ``send(wait=...)`` waits in this clock's time."""
        self.advance(seconds)
