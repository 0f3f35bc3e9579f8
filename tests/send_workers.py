"""Code that runs in child processes for test_multiprocess_send.py.

Started through ``workers.run_children`` (tests/storage/workers.py), which
documents the protocol: a spawned child imports this module by name and calls
:func:`send_until_limit` with the start barrier and the results queue.
Outcomes travel back as the small frozen dataclasses below (mailpool's
exceptions are summarized rather than pickled).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

from workers import BarrierLike, QueueLike, in_threads, report

from mailpool import (
    AccountPool,
    NoAccountAvailable,
    NoAccountReason,
    RetryPolicy,
    SendError,
    SendResult,
    open_storage,
)

__all__ = [
    "MAX_SENDS_PER_THREAD",
    "RECIPIENT",
    "Failed",
    "Outcome",
    "Sent",
    "Unavailable",
    "send_one",
    "send_until_limit",
]

RECIPIENT = "dave@example.net"
MAX_SENDS_PER_THREAD = 100
"""A thread stops after this many calls even if no account ever ran out."""
MAX_RETRY_AFTER = 1.0
"""Longest pause honoured for ``NoAccountAvailable(ALL_WAITING).retry_after``."""
WAIT = 30.0
"""``send_mail(wait=...)``: how long a send waits for a busy account."""


@dataclass(frozen=True)
class Sent:
    """``send_mail`` returned this result."""

    result: SendResult


@dataclass(frozen=True)
class Failed:
    """``send_mail`` raised a :class:`~mailpool.SendError`."""

    error: str
    account_id: str | None
    smtp_code: int | None


@dataclass(frozen=True)
class Unavailable:
    """``send_mail`` raised :class:`~mailpool.NoAccountAvailable`."""

    reason: NoAccountReason
    retry_after: float | None


Outcome = Sent | Failed | Unavailable


def send_until_limit(
    url: str,
    retry: RetryPolicy | None,
    threads: int,
    start: BarrierLike,
    results: QueueLike,
) -> None:
    """One :class:`AccountPool` on the storage at ``url``, shared by
    ``threads`` threads that each call ``send_mail`` until the pool raises
    :class:`~mailpool.NoAccountAvailable` for a reason other than
    ``ALL_WAITING`` (after which a caller would retry: they pause for
    ``retry_after`` and go on). Each thread's result is its list of
    :data:`Outcome`, in order."""

    def job() -> list[list[Outcome]]:
        storage = open_storage(url)
        try:
            with AccountPool(storage, retry=retry) as pool:
                return in_threads(threads, start, functools.partial(_send, pool))
        finally:
            storage.close()

    report(results, start, job)


def _send(pool: AccountPool, thread: int) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for n in range(MAX_SENDS_PER_THREAD):
        try:
            result = pool.send_mail(
                subject=f"Proof {os.getpid()}-{thread}-{n}",
                body="One of many.",
                to=[RECIPIENT],
                wait=WAIT,
            )
        except NoAccountAvailable as exc:
            outcomes.append(Unavailable(exc.reason, exc.retry_after))
            if exc.reason is not NoAccountReason.ALL_WAITING:
                break
            time.sleep(min(exc.retry_after or 0.0, MAX_RETRY_AFTER))
        except SendError as exc:
            outcomes.append(Failed(repr(exc), exc.account_id, exc.smtp_code))
        else:
            outcomes.append(Sent(result))
    return outcomes


def send_one(url: str, lease_timeout: float) -> None:
    """Send one message through a pool on ``url`` (the test kills this process
    while the server holds the message)."""
    storage = open_storage(url)
    with AccountPool(storage, lease_timeout=lease_timeout) as pool:
        pool.send_mail(
            subject="Killed mid-send", body="Never completed.", to=[RECIPIENT]
        )
