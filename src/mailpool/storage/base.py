"""The storage contract: where accounts and their usage counters live."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol, runtime_checkable

from mailpool.errors import ConfigurationError
from mailpool.models import Account, AccountStatus

__all__ = [
    "Reservation",
    "Scope",
    "Storage",
    "duplicate_email",
    "duplicate_id",
    "released",
]


@dataclass(frozen=True)
class Scope:
    """Which accounts a pool may use: all filters given must match.

    :param owner: only accounts of this owner (tenant, company).
    :param tag: only accounts carrying this tag (campaign assignment).
    :param account_ids: only these accounts.
    """

    owner: str | None = None
    tag: str | None = None
    account_ids: frozenset[str] | None = None

    def matches(self, account: Account) -> bool:
        """True when ``account`` is inside this scope."""
        return (
            (self.owner is None or account.owner == self.owner)
            and (self.tag is None or self.tag in account.tags)
            and (self.account_ids is None or account.id in self.account_ids)
        )

    def describe(self) -> str:
        """The scope in words, for error messages."""
        parts = [
            f"{name}={value!r}"
            for name, value in (("owner", self.owner), ("tag", self.tag))
            if value is not None
        ]
        if self.account_ids is not None:
            parts.append(f"{len(self.account_ids)} chosen account ids")
        return ", ".join(parts) or "all accounts"


@dataclass(frozen=True)
class Reservation:
    """One unit of an account's daily quota, taken by :meth:`Storage.reserve`.

    :param account: the account as it stands after the reservation.
    :param day: the day the unit was counted on.
    :param reserved_at: the time stamped as the account's ``last_sent_at``.
    :param previous_last_sent_at: ``last_sent_at`` before, restored on release.
    """

    account: Account
    day: date
    reserved_at: datetime
    previous_last_sent_at: datetime | None

    @property
    def account_id(self) -> str:
        """The reserved account's id."""
        return self.account.id


@runtime_checkable
class Storage(Protocol):
    """**Protocol**: where accounts and their usage counters live.

    Write a class with these methods to keep accounts anywhere; it needs no base
    class. Rules every backend follows (``tests/storage/contract.py`` checks
    them and can be reused for your own backend):

    - Methods raise only :class:`~mailpool.AccountNotFound`,
      :class:`~mailpool.ConfigurationError` (a duplicate email or id) or
      :class:`~mailpool.StorageError` raised ``from`` the driver's error.
    - Emails are unique, compared case-insensitively.
    - :meth:`accounts` and :meth:`eligible` return accounts ordered by email.
    - The usage fields (``sent_count``, ``count_day``, ``last_sent_at``) change
      only through :meth:`reserve`, :meth:`release` and
      :meth:`reset_daily_counts`; :meth:`add` stores them as given and
      :meth:`update` keeps the stored ones.
    - :meth:`reserve` is atomic: however many threads, processes or machines
      call it, an account never gets more reservations on one day than its
      ``daily_limit``, nor two within ``min_wait_time`` seconds.
    """

    def add(self, account: Account, /) -> Account:
        """Store a new account and return it.

        :raises ConfigurationError: if its id or email is already stored.
        """
        ...

    def get(self, account_id: str, /) -> Account:
        """The account with this id.

        :raises AccountNotFound: when there is none.
        """
        ...

    def get_by_email(self, email: str, /) -> Account:
        """The account with this email address (case-insensitive).

        :raises AccountNotFound: when there is none.
        """
        ...

    def accounts(
        self,
        *,
        owner: str | None = None,
        tag: str | None = None,
        status: AccountStatus | None = None,
    ) -> list[Account]:
        """Stored accounts matching every filter given, ordered by email."""
        ...

    def update(self, account: Account, /) -> Account:
        """Replace an account's settings, keeping its stored usage counters.

        :raises AccountNotFound: when no account has ``account.id``.
        :raises ConfigurationError: if the new email belongs to another account.
        """
        ...

    def remove(self, account_id: str, /) -> None:
        """Delete an account.

        :raises AccountNotFound: when there is none.
        """
        ...

    def eligible(self, scope: Scope, now: datetime, /) -> list[Account]:
        """Accounts in ``scope`` that may send at ``now``, ordered by email.

        Eligible means: status active, fewer sends on ``now.date()`` than the
        daily limit, and at least ``min_wait_time`` seconds since the last send.
        Counts are returned rolled over to ``now.date()``.
        """
        ...

    def reserve(self, account_id: str, now: datetime, /) -> Reservation | None:
        """Atomically re-check eligibility and count one send at ``now``.

        :returns: the reservation, or ``None`` if the account is no longer
            eligible (another worker took the last unit, or it must wait).
        :raises AccountNotFound: when there is no such account.
        """
        ...

    def release(self, reservation: Reservation, /) -> None:
        """Give back a reservation whose send failed, so it does not count.

        Restores ``last_sent_at`` unless another send stamped it since. Does
        nothing if the account is gone or its count has rolled over.
        """
        ...

    def reset_daily_counts(self, *, owner: str | None = None) -> int:
        """Set today's count of every account (of ``owner``) to 0.

        :returns: how many accounts had a count above 0.
        """
        ...

    def close(self) -> None:
        """Release connections, file handles and locks. Idempotent."""
        ...


def duplicate_id(account_id: str) -> ConfigurationError:
    """The error every backend raises when an id is taken."""
    return ConfigurationError(f"an account with id {account_id!r} exists")


def duplicate_email(email: str, other_id: str) -> ConfigurationError:
    """The error every backend raises when another account has ``email``."""
    return ConfigurationError(f"another account ({other_id}) already uses {email!r}")


def released(account: Account, reservation: Reservation) -> Account:
    """``account`` with ``reservation`` given back (the rule of
    :meth:`Storage.release`, shared by the backends that hold Account objects)."""
    changes: dict[str, object] = {}
    if account.count_day == reservation.day and account.sent_count > 0:
        changes["sent_count"] = account.sent_count - 1
    if account.last_sent_at == reservation.reserved_at:
        changes["last_sent_at"] = reservation.previous_last_sent_at
    return account.model_copy(update=changes) if changes else account
