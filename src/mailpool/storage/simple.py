"""SimpleStorage: every Storage operation from one locked read-modify-write.

Subclass it to keep accounts anywhere that can hold ``{account id: Account}``
under an exclusive lock (a file, a key-value store, a document database):
implement :meth:`SimpleStorage.locked_read` and
:meth:`SimpleStorage.locked_write` and the whole :class:`~mailpool.Storage`
protocol, claims included, follows. Every operation reads all accounts, so
its cost grows with their number: fine for hundreds or a few thousand
accounts. :class:`~mailpool.JSONStorage` is built this way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime

from mailpool.errors import AccountNotFound
from mailpool.models import USAGE_FIELDS, Account, AccountStatus, Failure
from mailpool.storage.base import (
    CANDIDATE_SAMPLE,
    Claim,
    Lease,
    Scope,
    duplicate_email,
    duplicate_id,
)

__all__ = ["SimpleStorage"]


class SimpleStorage:
    """The :class:`~mailpool.Storage` protocol over ``{account id: Account}``.

    Subclasses implement two context managers, both holding a lock that
    excludes every other writer (of every process that shares the accounts):

    - :meth:`locked_read` yields a consistent read-only view;
    - :meth:`locked_write` yields a mutable dict and commits it atomically
      when the block exits without an error (and discards it otherwise).

    .. versionadded:: 0.2
    """

    _location: str | None = None

    def locked_read(self) -> AbstractContextManager[Mapping[str, Account]]:
        """A consistent view of every account, by id (do not mutate it)."""
        raise NotImplementedError

    def locked_write(self) -> AbstractContextManager[dict[str, Account]]:
        """Every account by id, to change; committed atomically on success."""
        raise NotImplementedError

    def add(self, account: Account, /) -> Account:
        """Store a new account; see :meth:`Storage.add`."""
        self.add_many([account])
        return account

    def add_many(self, accounts: Iterable[Account], /) -> int:
        """Store new accounts, all or none; see :meth:`Storage.add_many`."""
        new = list(accounts)
        with self.locked_write() as stored:
            emails = {account.email.casefold(): key for key, account in stored.items()}
            for account in new:
                if account.id in stored:
                    raise duplicate_id(account.id)
                other = emails.setdefault(account.email.casefold(), account.id)
                if other != account.id:
                    raise duplicate_email(account.email, other)
                stored[account.id] = account
        return len(new)

    def get(self, account_id: str, /) -> Account:
        """See :meth:`Storage.get`."""
        with self.locked_read() as accounts:
            return self._find(accounts, account_id)

    def get_by_email(self, email: str, /) -> Account:
        """See :meth:`Storage.get_by_email`."""
        key = email.strip().casefold()
        with self.locked_read() as accounts:
            for account in accounts.values():
                if account.email.casefold() == key:
                    return account
        raise AccountNotFound(email, location=self._location)

    def accounts(
        self,
        *,
        owner: str | None = None,
        tag: str | None = None,
        status: AccountStatus | None = None,
    ) -> list[Account]:
        """See :meth:`Storage.accounts`."""
        scope = Scope(owner=owner, tag=tag)
        with self.locked_read() as accounts:
            return by_email(
                account
                for account in accounts.values()
                if scope.matches(account) and status in (None, account.status)
            )

    def update(self, account: Account, /) -> Account:
        """See :meth:`Storage.update`."""
        with self.locked_write() as accounts:
            stored = self._find(accounts, account.id)
            email = account.email.casefold()
            for other in accounts.values():
                if other.id != account.id and other.email.casefold() == email:
                    raise duplicate_email(account.email, other.id)
            updated = accounts[account.id] = with_usage_of(stored, account)
        return updated

    def remove(self, account_id: str, /) -> None:
        """See :meth:`Storage.remove`."""
        with self.locked_write() as accounts:
            self._find(accounts, account_id)
            del accounts[account_id]

    def candidates(
        self, claim: Claim, /, *, limit: int = CANDIDATE_SAMPLE
    ) -> list[Account]:
        """See :meth:`Storage.candidates`."""
        with self.locked_read() as accounts:
            allowed = [
                a.as_of(a.local_day(claim.now))
                for a in accounts.values()
                if claim.allows(a)
            ]
        if len(allowed) > limit:
            allowed = claim.rng.sample(allowed, limit)
        return allowed

    def claim(self, claim: Claim, /) -> Lease | None:
        """See :meth:`Storage.claim`: picked and counted under the write lock."""
        with self.locked_write() as accounts:
            if claim.account_id is not None:
                found = accounts.get(claim.account_id)
                allowed = [found] if found is not None else []
            else:
                allowed = list(accounts.values())
            chosen = claim.pick(a for a in allowed if claim.allows(a))
            if chosen is None:
                return None
            claimed = accounts[chosen.id] = chosen.with_claim(
                claim.now, claim.lease_until()
            )
        return Lease.of(claimed, claim)

    def complete(self, lease: Lease, now: datetime, /) -> None:
        """See :meth:`Storage.complete`."""
        self._end(lease, now, delivered=True)

    def release(self, lease: Lease, now: datetime, /) -> None:
        """See :meth:`Storage.release`."""
        self._end(lease, now, delivered=False)

    def _end(self, lease: Lease, now: datetime, *, delivered: bool) -> None:
        with self.locked_write() as accounts:
            account = accounts.get(lease.account_id)
            if account is not None:
                accounts[account.id] = account.with_lease_ended(
                    lease.expires_at, now, delivered=delivered, day=lease.day
                )

    def record_failure(self, account_id: str, failure: Failure, /) -> Account | None:
        """See :meth:`~mailpool.storage.base.RecordsFailures.record_failure`.

        .. versionadded:: 0.2
        """
        with self.locked_write() as accounts:
            account = accounts.get(account_id)
            if account is None:
                return None
            updated = accounts[account_id] = account.with_failure(failure)
        return updated

    def reset_daily_counts(self, *, owner: str | None = None) -> int:
        """See :meth:`Storage.reset_daily_counts`."""
        reset = 0
        with self.locked_write() as accounts:
            for account in list(accounts.values()):
                if owner in (None, account.owner) and account.sent_count > 0:
                    accounts[account.id] = account.model_copy(update={"sent_count": 0})
                    reset += 1
        return reset

    def close(self) -> None:
        """Nothing to release by default; override when there is."""

    def _find(self, accounts: Mapping[str, Account], account_id: str) -> Account:
        try:
            return accounts[account_id]
        except KeyError:
            raise AccountNotFound(account_id, location=self._location) from None


def with_usage_of(stored: Account, account: Account) -> Account:
    """``account``'s settings with ``stored``'s usage fields."""
    return account.model_copy(
        update={name: getattr(stored, name) for name in USAGE_FIELDS}
    )


def changed(before: Mapping[str, Account], after: Mapping[str, Account]) -> bool:
    """True when ``after`` holds other Account objects than ``before``."""
    return len(before) != len(after) or any(
        before.get(key) is not value for key, value in after.items()
    )


def by_email(accounts: Iterator[Account]) -> list[Account]:
    """``accounts`` sorted by case-folded email, the order of
    :meth:`Storage.accounts`."""
    return sorted(accounts, key=lambda account: account.email.casefold())
