"""InMemoryStorage: accounts in a dict, for tests, scripts and single processes."""

from __future__ import annotations

import threading
from datetime import datetime

from mailpool.errors import AccountNotFound, ConfigurationError
from mailpool.models import Account, AccountStatus
from mailpool.storage.base import Reservation, Scope, released

__all__ = ["InMemoryStorage"]


class InMemoryStorage:
    """Accounts in memory, safe to share between the threads of one process.

    Nothing survives the process: use :class:`~mailpool.JSONStorage` or
    :class:`~mailpool.SQLStorage` to keep accounts, or to share them between
    processes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}

    @classmethod
    def from_url(cls, url: str) -> InMemoryStorage:
        """Open ``memory://``.

        :raises ConfigurationError: if the URL has a path or options.
        """
        if url.rstrip("/").lower() != "memory:":
            raise ConfigurationError(
                f"memory storage takes no path or options: use 'memory://', not {url!r}"
            )
        return cls()

    def __repr__(self) -> str:
        return f"<InMemoryStorage: {len(self._accounts)} accounts>"

    def _find(self, account_id: str) -> Account:
        try:
            return self._accounts[account_id]
        except KeyError:
            raise AccountNotFound(account_id) from None

    def _check_unique(self, account: Account) -> None:
        email = account.email.casefold()
        for other in self._accounts.values():
            if other.id != account.id and other.email.casefold() == email:
                raise ConfigurationError(
                    f"another account ({other.id}) already uses {account.email!r}"
                )

    def add(self, account: Account, /) -> Account:
        """Store a new account; see :meth:`Storage.add`."""
        with self._lock:
            if account.id in self._accounts:
                raise ConfigurationError(f"an account with id {account.id!r} exists")
            self._check_unique(account)
            self._accounts[account.id] = account
            return account

    def get(self, account_id: str, /) -> Account:
        """See :meth:`Storage.get`."""
        with self._lock:
            return self._find(account_id)

    def get_by_email(self, email: str, /) -> Account:
        """See :meth:`Storage.get_by_email`."""
        key = email.strip().casefold()
        with self._lock:
            for account in self._accounts.values():
                if account.email.casefold() == key:
                    return account
        raise AccountNotFound(email)

    def accounts(
        self,
        *,
        owner: str | None = None,
        tag: str | None = None,
        status: AccountStatus | None = None,
    ) -> list[Account]:
        """See :meth:`Storage.accounts`."""
        scope = Scope(owner=owner, tag=tag)
        with self._lock:
            found = [
                account
                for account in self._accounts.values()
                if scope.matches(account) and status in (None, account.status)
            ]
        return sorted(found, key=lambda account: account.email.casefold())

    def update(self, account: Account, /) -> Account:
        """See :meth:`Storage.update`."""
        with self._lock:
            stored = self._find(account.id)
            self._check_unique(account)
            updated = account.model_copy(
                update={
                    "sent_count": stored.sent_count,
                    "count_day": stored.count_day,
                    "last_sent_at": stored.last_sent_at,
                }
            )
            self._accounts[account.id] = updated
            return updated

    def remove(self, account_id: str, /) -> None:
        """See :meth:`Storage.remove`."""
        with self._lock:
            self._find(account_id)
            del self._accounts[account_id]

    def eligible(self, scope: Scope, now: datetime, /) -> list[Account]:
        """See :meth:`Storage.eligible`."""
        day = now.date()
        with self._lock:
            found = [
                account.as_of(day)
                for account in self._accounts.values()
                if scope.matches(account) and account.is_eligible(now)
            ]
        return sorted(found, key=lambda account: account.email.casefold())

    def reserve(self, account_id: str, now: datetime, /) -> Reservation | None:
        """See :meth:`Storage.reserve`."""
        with self._lock:
            account = self._find(account_id)
            if not account.is_eligible(now):
                return None
            reserved = account.with_send(now)
            self._accounts[account_id] = reserved
        assert reserved.last_sent_at is not None
        return Reservation(
            account=reserved,
            day=now.date(),
            reserved_at=reserved.last_sent_at,
            previous_last_sent_at=account.last_sent_at,
        )

    def release(self, reservation: Reservation, /) -> None:
        """See :meth:`Storage.release`."""
        with self._lock:
            account = self._accounts.get(reservation.account_id)
            if account is not None:
                self._accounts[account.id] = released(account, reservation)

    def reset_daily_counts(self, *, owner: str | None = None) -> int:
        """See :meth:`Storage.reset_daily_counts`."""
        reset = 0
        with self._lock:
            for account in list(self._accounts.values()):
                if owner in (None, account.owner) and account.sent_count > 0:
                    self._accounts[account.id] = account.model_copy(
                        update={"sent_count": 0}
                    )
                    reset += 1
        return reset

    def close(self) -> None:
        """Nothing to release; kept for the :class:`Storage` protocol."""
