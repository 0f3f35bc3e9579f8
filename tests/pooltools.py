"""Helpers for the pool tests (their fixtures are in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from mailpool import (
    Account,
    AccountPool,
    AccountStatus,
    Claim,
    InMemoryStorage,
    Lease,
    SendResult,
    Storage,
)
from mailpool.storage import CANDIDATE_SAMPLE

__all__ = [
    "ALICE",
    "BOB",
    "CAROL",
    "RECIPIENT",
    "UNUSED",
    "AccountFactory",
    "PoolFactory",
    "ProtocolOnly",
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


class ProtocolOnly:
    """A storage with exactly the :class:`Storage` protocol (none of the
    optional methods, such as ``record_failure``), forwarding every call to
    the storage ``source()`` returns for it: the same object each time, or a
    new one on the same location (so nothing can come from memory)."""

    def __init__(self, source: Callable[[], Storage]) -> None:
        self.source = source

    def add(self, account: Account, /) -> Account:
        return self.source().add(account)

    def get(self, account_id: str, /) -> Account:
        return self.source().get(account_id)

    def get_by_email(self, email: str, /) -> Account:
        return self.source().get_by_email(email)

    def accounts(
        self,
        *,
        owner: str | None = None,
        tag: str | None = None,
        status: AccountStatus | None = None,
    ) -> list[Account]:
        return self.source().accounts(owner=owner, tag=tag, status=status)

    def update(self, account: Account, /) -> Account:
        return self.source().update(account)

    def remove(self, account_id: str, /) -> None:
        self.source().remove(account_id)

    def add_many(self, accounts: Iterable[Account], /) -> int:
        return self.source().add_many(accounts)

    def candidates(
        self, claim: Claim, /, *, limit: int = CANDIDATE_SAMPLE
    ) -> list[Account]:
        return self.source().candidates(claim, limit=limit)

    def claim(self, claim: Claim, /) -> Lease | None:
        return self.source().claim(claim)

    def complete(self, lease: Lease, now: datetime, /) -> None:
        self.source().complete(lease, now)

    def release(self, lease: Lease, now: datetime, /) -> None:
        self.source().release(lease, now)

    def reset_daily_counts(self, *, owner: str | None = None) -> int:
        return self.source().reset_daily_counts(owner=owner)

    def close(self) -> None:
        pass
