"""The Storage operations of the backends that hold Account objects in a dict.

:class:`InMemoryStorage` and :class:`JSONStorage` differ only in where the dict
lives and how it is locked; both inherit these operations and supply
``_reading()`` and ``_writing()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime

from mailpool.errors import AccountNotFound
from mailpool.models import Account, AccountStatus
from mailpool.storage.base import (
    Reservation,
    Scope,
    duplicate_email,
    duplicate_id,
    released,
)

__all__ = ["MappingStorage"]


class MappingStorage:
    """Storage protocol operations over ``{account id: Account}``.

    Subclasses implement :meth:`_reading` (a consistent, read-only view) and
    :meth:`_writing` (a mutable copy, committed atomically when the block exits
    without an error), both holding whatever lock the backend needs.
    """

    _location: str | None = None

    def _reading(self) -> AbstractContextManager[Mapping[str, Account]]:
        raise NotImplementedError

    def _writing(self) -> AbstractContextManager[dict[str, Account]]:
        raise NotImplementedError

    def add(self, account: Account, /) -> Account:
        """Store a new account; see :meth:`Storage.add`."""
        with self._writing() as accounts:
            if account.id in accounts:
                raise duplicate_id(account.id)
            _check_unique(accounts, account)
            accounts[account.id] = account
        return account

    def get(self, account_id: str, /) -> Account:
        """See :meth:`Storage.get`."""
        with self._reading() as accounts:
            return self._find(accounts, account_id)

    def get_by_email(self, email: str, /) -> Account:
        """See :meth:`Storage.get_by_email`."""
        key = email.strip().casefold()
        with self._reading() as accounts:
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
        with self._reading() as accounts:
            return _by_email(
                account
                for account in accounts.values()
                if scope.matches(account) and status in (None, account.status)
            )

    def update(self, account: Account, /) -> Account:
        """See :meth:`Storage.update`."""
        with self._writing() as accounts:
            stored = self._find(accounts, account.id)
            _check_unique(accounts, account)
            updated = account.model_copy(
                update={
                    "sent_count": stored.sent_count,
                    "count_day": stored.count_day,
                    "last_sent_at": stored.last_sent_at,
                }
            )
            accounts[account.id] = updated
        return updated

    def remove(self, account_id: str, /) -> None:
        """See :meth:`Storage.remove`."""
        with self._writing() as accounts:
            self._find(accounts, account_id)
            del accounts[account_id]

    def eligible(self, scope: Scope, now: datetime, /) -> list[Account]:
        """See :meth:`Storage.eligible`."""
        day = now.date()
        with self._reading() as accounts:
            return _by_email(
                account.as_of(day)
                for account in accounts.values()
                if scope.matches(account) and account.is_eligible(now)
            )

    def reserve(self, account_id: str, now: datetime, /) -> Reservation | None:
        """See :meth:`Storage.reserve`: checked and counted under the write lock."""
        with self._writing() as accounts:
            account = self._find(accounts, account_id)
            if not account.is_eligible(now):
                return None
            reserved = accounts[account_id] = account.with_send(now)
        assert reserved.last_sent_at is not None
        return Reservation(
            account=reserved,
            day=now.date(),
            reserved_at=reserved.last_sent_at,
            previous_last_sent_at=account.last_sent_at,
        )

    def release(self, reservation: Reservation, /) -> None:
        """See :meth:`Storage.release`."""
        with self._writing() as accounts:
            account = accounts.get(reservation.account_id)
            if account is not None:
                accounts[account.id] = released(account, reservation)

    def reset_daily_counts(self, *, owner: str | None = None) -> int:
        """See :meth:`Storage.reset_daily_counts`."""
        reset = 0
        with self._writing() as accounts:
            for account in list(accounts.values()):
                if owner in (None, account.owner) and account.sent_count > 0:
                    accounts[account.id] = account.model_copy(update={"sent_count": 0})
                    reset += 1
        return reset

    def _find(self, accounts: Mapping[str, Account], account_id: str) -> Account:
        try:
            return accounts[account_id]
        except KeyError:
            raise AccountNotFound(account_id, location=self._location) from None


def changed(before: Mapping[str, Account], after: Mapping[str, Account]) -> bool:
    """True when ``after`` holds other Account objects than ``before``."""
    return len(before) != len(after) or any(
        before.get(key) is not value for key, value in after.items()
    )


def _by_email(accounts: Iterator[Account]) -> list[Account]:
    return sorted(accounts, key=lambda account: account.email.casefold())


def _check_unique(accounts: Mapping[str, Account], account: Account) -> None:
    email = account.email.casefold()
    for other in accounts.values():
        if other.id != account.id and other.email.casefold() == email:
            raise duplicate_email(account.email, other.id)
