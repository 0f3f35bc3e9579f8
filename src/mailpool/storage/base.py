"""The storage contract: where accounts and their usage counters live.

A send goes through three storage operations:

1. :meth:`Storage.claim` picks one eligible account in scope by a
   :class:`Strategy` (or takes the one a custom selector chose) and, in the same
   atomic step, counts one unit of its daily quota and takes a send slot: a
   :class:`Lease`.
2. :meth:`Storage.complete` ends the lease of a delivered message: the slot is
   freed and the delivery time stamped (``min_wait_time`` counts from there).
3. :meth:`Storage.release` ends the lease of a failed send: the slot is freed
   and the unit given back.

A lease whose worker died is neither completed nor released: it runs out at
``Lease.expires_at``, which frees its slot and keeps its unit counted.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

from mailpool.errors import ConfigurationError
from mailpool.models import Account, AccountStatus, Failure

__all__ = [
    "CANDIDATE_SAMPLE",
    "Claim",
    "Lease",
    "RecordsFailures",
    "Scope",
    "Storage",
    "Strategy",
    "duplicate_email",
    "duplicate_id",
]

CANDIDATE_SAMPLE = 32
"""How many eligible accounts a custom selector sees at most, per claim."""

_RANDOM = random.Random()


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


class Strategy(str, enum.Enum):
    """How :meth:`Storage.claim` picks among the eligible accounts."""

    RANDOM = "random"
    """Any eligible account, each as likely as the others (the default)."""
    ROUND_ROBIN = "round_robin"
    """The eligible account whose latest claim is the oldest (never claimed
    first): the accounts take turns, across every process sharing the storage."""
    LEAST_USED = "least_used"
    """The eligible account with the fewest sends today."""


@dataclass(frozen=True)
class Claim:
    """What :meth:`Storage.claim` is asked for.

    :param scope: the accounts the pool may use.
    :param now: the caller's current time (aware). Each account counts on its
        own day: the date of ``now`` in its time zone
        (:meth:`Account.local_day`), or the later day it already counts.
    :param lease_seconds: how long the send slot stays taken if the lease is
        never completed or released (the worker died).
    :param strategy: how to pick among the eligible accounts.
    :param account_id: claim exactly this account (a custom selector chose it)
        instead of picking one; ``strategy`` is then ignored.
    :param exclude: accounts not to claim (already tried for this message).
    :param rng: the random numbers of :attr:`Strategy.RANDOM` (seedable).
    """

    scope: Scope
    now: datetime
    lease_seconds: float = 300.0
    strategy: Strategy = Strategy.RANDOM
    account_id: str | None = None
    exclude: frozenset[str] = frozenset()
    rng: random.Random = field(default=_RANDOM, repr=False, compare=False)

    @property
    def day(self) -> date:
        """The date of :attr:`now` in UTC: the day a unit counts on for an
        account in UTC (each account counts on its own :meth:`Account.local_day`)."""
        return self.now.astimezone(timezone.utc).date()

    def allows(self, account: Account) -> bool:
        """True when ``account`` may be claimed: in scope, not excluded, the
        one asked for (if any), and eligible at :attr:`now`."""
        return (
            (self.account_id is None or account.id == self.account_id)
            and account.id not in self.exclude
            and self.scope.matches(account)
            and account.is_eligible(self.now)
        )

    def lease_until(self) -> datetime:
        """When a lease taken now runs out."""
        return self.now + timedelta(seconds=self.lease_seconds)

    def pick(self, candidates: Iterable[Account]) -> Account | None:
        """The account :attr:`strategy` picks among ``candidates`` (which
        :meth:`allows` already accepted), or None when there is none.

        The reference rule, in plain Python: backends without their own
        index (and tests) use it as it is; others implement the same order.
        """
        accounts = list(candidates)
        if not accounts:
            return None
        if self.account_id is not None or self.strategy is Strategy.RANDOM:
            return self.rng.choice(accounts)
        if self.strategy is Strategy.ROUND_ROBIN:
            return min(accounts, key=_rotation_key)
        now = self.now
        return min(accounts, key=lambda account: (account.sent_today(now), account.id))


def _rotation_key(account: Account) -> tuple[bool, datetime | None, str]:
    # Never claimed first, then the oldest latest claim, then the lowest id.
    return (account.lease_until is not None, account.lease_until, account.id)


@dataclass(frozen=True)
class Lease:
    """A claimed send: one unit of quota counted and one send slot taken.

    :param account: the account as it stands after the claim.
    :param day: the day the unit was counted on.
    :param claimed_at: the claim's ``now``.
    :param expires_at: when the slot frees itself if the lease is never ended.
    """

    account: Account
    day: date
    claimed_at: datetime
    expires_at: datetime

    @property
    def account_id(self) -> str:
        """The claimed account's id."""
        return self.account.id

    @classmethod
    def of(cls, account: Account, claim: Claim) -> Lease:
        """The lease ``claim`` took on ``account`` (as it stands after it)."""
        assert account.count_day is not None  # a claim always sets it
        return cls(
            account=account,
            day=account.count_day,
            claimed_at=claim.now,
            expires_at=claim.lease_until(),
        )


@runtime_checkable
class Storage(Protocol):
    """**Protocol**: where accounts and their usage counters live.

    Write a class with these methods to keep accounts anywhere; it needs no base
    class (or subclass :class:`~mailpool.storage.SimpleStorage`, which derives
    all of them from one locked read-modify-write). Rules every backend follows
    (``mailpool.testing.StorageContract`` checks them and can be reused for your
    own backend):

    - Methods raise only :class:`~mailpool.AccountNotFound`,
      :class:`~mailpool.ConfigurationError` (a duplicate email or id) or
      :class:`~mailpool.StorageError` raised ``from`` the driver's error.
    - Emails are unique, compared case-insensitively.
    - :meth:`accounts` returns accounts ordered by email.
    - The usage fields (``sent_count``, ``count_day``, ``last_sent_at``,
      ``in_flight``, ``lease_until``, and the health fields ``paused_until``,
      ``pause_kind``, ``consecutive_failures``, ``last_error``,
      ``last_error_at``) change only through :meth:`claim`,
      :meth:`complete`, :meth:`release`, :meth:`reset_daily_counts` and
      ``record_failure`` (see :class:`RecordsFailures`); :meth:`add` stores
      them as given and :meth:`update` keeps the stored ones.
    - :meth:`claim` is atomic: however many threads, processes or machines
      call it, an account never gets more claims on one day than its
      ``daily_limit``, nor more than ``max_in_flight`` unexpired leases at
      once, nor a claim within ``min_wait_time`` seconds of a delivery.
    """

    def add(self, account: Account, /) -> Account:
        """Store a new account and return it.

        :raises ConfigurationError: if its id or email is already stored.
        """
        ...

    def add_many(self, accounts: Iterable[Account], /) -> int:
        """Store new accounts atomically: all of them, or none.

        :returns: how many were stored.
        :raises ConfigurationError: if an id or email is already stored or
            repeats within ``accounts`` (nothing is stored then).
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

    def candidates(
        self, claim: Claim, /, *, limit: int = CANDIDATE_SAMPLE
    ) -> list[Account]:
        """Up to ``limit`` accounts that ``claim`` may take (see
        :meth:`Claim.allows`), a random sample when more are eligible, with
        their counts rolled over to each account's day at ``claim.now``
        (:meth:`Account.local_day`). For custom selectors: the
        work done must not grow with the number of accounts in scope."""
        ...

    def claim(self, claim: Claim, /) -> Lease | None:
        """Atomically pick an account ``claim`` allows, count one send on
        its day (the later of :meth:`Account.local_day` and its stored
        ``count_day``) and take a send slot until ``claim.lease_until()`` (the
        rule of :meth:`Account.with_claim`).

        :returns: the lease, or ``None`` when no account may be claimed.
        """
        ...

    def complete(self, lease: Lease, now: datetime, /) -> None:
        """End the lease of a delivered message: free its slot and stamp
        ``last_sent_at`` with ``now`` (never moving it back). The unit stays
        counted. Does nothing if the account is gone."""
        ...

    def release(self, lease: Lease, now: datetime, /) -> None:
        """End the lease of a send that failed: free its slot and give back
        its unit, so it does not count. Does nothing if the account is gone or
        its count has rolled over to another day."""
        ...

    def reset_daily_counts(self, *, owner: str | None = None) -> int:
        """Set today's count of every account (of ``owner``) to 0.

        :returns: how many accounts had a count above 0.
        """
        ...

    def close(self) -> None:
        """Release connections, file handles and locks. Idempotent."""
        ...


@runtime_checkable
class RecordsFailures(Protocol):
    """**Protocol**: a storage that keeps each account's health, so that
    every worker sharing it respects a pause or an error (optional).

    :class:`~mailpool.InMemoryStorage`, :class:`~mailpool.JSONStorage` and
    every :class:`~mailpool.storage.SimpleStorage` implement it. With a
    storage that does not, the pool still fails over and still sets accounts
    with refused credentials to ``error`` (through :meth:`Storage.update`),
    but quota holds, cool-downs and failure counts are not stored.

    .. versionadded:: 0.2
    """

    def record_failure(self, account_id: str, failure: Failure, /) -> Account | None:
        """Atomically apply ``failure`` to the account by the rule of
        :meth:`Account.with_failure` (and claims then respect it through
        :meth:`Account.is_eligible`).

        :returns: the account as stored afterwards, or None if it is gone.
        """
        ...


def duplicate_id(account_id: str) -> ConfigurationError:
    """The error every backend raises when an id is taken."""
    return ConfigurationError(f"an account with id {account_id!r} exists")


def duplicate_email(email: str, other_id: str) -> ConfigurationError:
    """The error every backend raises when another account has ``email``."""
    return ConfigurationError(f"another account ({other_id}) already uses {email!r}")
