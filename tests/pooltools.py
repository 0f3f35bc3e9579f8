"""Helpers for the pool tests (their fixtures are in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from mailpool import Account, AccountPool, AccountStatus, InMemoryStorage, SendResult

__all__ = [
    "ALICE",
    "BOB",
    "CAROL",
    "RECIPIENT",
    "UNUSED",
    "AccountFactory",
    "PoolFactory",
    "first",
    "send",
    "usage_state",
]

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
RECIPIENT = "dave@example.net"

PoolFactory = Callable[..., AccountPool]
AccountFactory = Callable[..., Account]


def first(candidates: Sequence[Account]) -> Account:
    """A selector function: the first candidate (candidates are sorted by email)."""
    return candidates[0]


UNUSED = (AccountStatus.ACTIVE, 0, None)


def usage_state(
    storage: InMemoryStorage, account: Account
) -> tuple[AccountStatus, int, datetime | None]:
    """Status, stored count and last send of ``account`` as stored now."""
    stored = storage.get(account.id)
    return stored.status, stored.sent_count, stored.last_sent_at


def send(pool: AccountPool, to: str = RECIPIENT) -> SendResult:
    return pool.send_mail(subject="Hello", body="Hi Dave.", to=[to])
