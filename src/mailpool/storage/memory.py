"""InMemoryStorage: accounts in a dict, for tests, scripts and single processes.

Indexed so that no send-path operation looks at every account: emails, owners
and tags each have an index, and a random claim probes random accounts of the
smallest index that covers the scope.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime

from mailpool.errors import AccountNotFound, ConfigurationError
from mailpool.models import Account, AccountStatus, Failure
from mailpool.storage.base import (
    CANDIDATE_SAMPLE,
    Claim,
    Lease,
    Scope,
    Strategy,
    duplicate_email,
    duplicate_id,
)
from mailpool.storage.simple import by_email, with_usage_of

__all__ = ["InMemoryStorage"]

_PROBES = 16
"""Random probes of a claim before it falls back to scanning its scope."""


class _IdSet:
    """Ids with O(1) add, remove and access by position (for random picks)."""

    __slots__ = ("ids", "where")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.where: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, key: str) -> None:
        if key not in self.where:
            self.where[key] = len(self.ids)
            self.ids.append(key)

    def discard(self, key: str) -> None:
        position = self.where.pop(key, None)
        if position is None:
            return
        last = self.ids.pop()
        if last != key:
            self.ids[position] = last
            self.where[last] = position


class InMemoryStorage:
    """Accounts in memory, safe to share between the threads of one process.

    Nothing survives the process: use :class:`~mailpool.JSONStorage` or
    :class:`~mailpool.SQLStorage` to keep accounts, or to share them between
    processes. A claim costs the same for 10 accounts as for 100,000, except
    with :attr:`~mailpool.storage.Strategy.LEAST_USED`, which compares every
    account in scope.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        self._emails: dict[str, str] = {}
        self._all = _IdSet()
        self._owners: dict[str | None, _IdSet] = {}
        self._tags: dict[str, _IdSet] = {}
        self._cursors: dict[tuple[str, str | None], int] = {}

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

    # -- accounts --------------------------------------------------------------

    def add(self, account: Account, /) -> Account:
        """Store a new account; see :meth:`Storage.add`."""
        self.add_many([account])
        return account

    def add_many(self, accounts: Iterable[Account], /) -> int:
        """Store new accounts, all or none; see :meth:`Storage.add_many`."""
        new = list(accounts)
        with self._lock:
            ids: set[str] = set()
            emails: dict[str, str] = {}
            for account in new:
                if account.id in self._accounts or account.id in ids:
                    raise duplicate_id(account.id)
                email = account.email.casefold()
                other = self._emails.get(email) or emails.get(email)
                if other is not None:
                    raise duplicate_email(account.email, other)
                ids.add(account.id)
                emails[email] = account.id
            for account in new:
                self._insert(account)
        return len(new)

    def get(self, account_id: str, /) -> Account:
        """See :meth:`Storage.get`."""
        with self._lock:
            return self._find(account_id)

    def get_by_email(self, email: str, /) -> Account:
        """See :meth:`Storage.get_by_email`."""
        with self._lock:
            account_id = self._emails.get(email.strip().casefold())
            if account_id is None:
                raise AccountNotFound(email)
            return self._accounts[account_id]

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
            found = [self._accounts[key] for key in self._base(scope)]
        return by_email(
            account
            for account in found
            if scope.matches(account) and status in (None, account.status)
        )

    def update(self, account: Account, /) -> Account:
        """See :meth:`Storage.update`."""
        with self._lock:
            stored = self._find(account.id)
            other = self._emails.get(account.email.casefold())
            if other is not None and other != account.id:
                raise duplicate_email(account.email, other)
            self._delete(stored)
            updated = with_usage_of(stored, account)
            self._insert(updated)
        return updated

    def remove(self, account_id: str, /) -> None:
        """See :meth:`Storage.remove`."""
        with self._lock:
            self._delete(self._find(account_id))

    # -- the send path ---------------------------------------------------------

    def candidates(
        self, claim: Claim, /, *, limit: int = CANDIDATE_SAMPLE
    ) -> list[Account]:
        """See :meth:`Storage.candidates`: random probes, then a scan only when
        few accounts in scope are eligible."""
        with self._lock:
            base = self._base(claim.scope)
            found: dict[str, Account] = {}
            if len(base) > 4 * limit:
                for _ in range(4 * limit):
                    account = self._accounts[base[claim.rng.randrange(len(base))]]
                    if claim.allows(account):
                        found[account.id] = account
                        if len(found) == limit:
                            break
            if len(found) < limit:
                found = {
                    key: account
                    for key in base
                    if claim.allows(account := self._accounts[key])
                }
        chosen = list(found.values())
        if len(chosen) > limit:
            chosen = claim.rng.sample(chosen, limit)
        return [account.as_of(account.local_day(claim.now)) for account in chosen]

    def claim(self, claim: Claim, /) -> Lease | None:
        """See :meth:`Storage.claim`: picked and counted under the lock."""
        with self._lock:
            chosen = self._pick(claim)
            if chosen is None:
                return None
            claimed = chosen.with_claim(claim.now, claim.lease_until())
            self._accounts[claimed.id] = claimed
        return Lease.of(claimed, claim)

    def complete(self, lease: Lease, now: datetime, /) -> None:
        """See :meth:`Storage.complete`."""
        self._end(lease, now, delivered=True)

    def release(self, lease: Lease, now: datetime, /) -> None:
        """See :meth:`Storage.release`."""
        self._end(lease, now, delivered=False)

    def record_failure(self, account_id: str, failure: Failure, /) -> Account | None:
        """See :meth:`~mailpool.storage.base.RecordsFailures.record_failure`.

        .. versionadded:: 0.2
        """
        with self._lock:
            account = self._accounts.get(account_id)
            if account is None:
                return None
            updated = self._accounts[account_id] = account.with_failure(failure)
        return updated

    def reset_daily_counts(self, *, owner: str | None = None) -> int:
        """See :meth:`Storage.reset_daily_counts`."""
        reset = 0
        with self._lock:
            for key in self._base(Scope(owner=owner)):
                account = self._accounts[key]
                if account.sent_count > 0:
                    self._accounts[key] = account.model_copy(update={"sent_count": 0})
                    reset += 1
        return reset

    def close(self) -> None:
        """Nothing to release; kept for the :class:`Storage` protocol."""

    # -- internals (the caller holds the lock) ---------------------------------

    def _find(self, account_id: str) -> Account:
        try:
            return self._accounts[account_id]
        except KeyError:
            raise AccountNotFound(account_id) from None

    def _insert(self, account: Account) -> None:
        self._accounts[account.id] = account
        self._emails[account.email.casefold()] = account.id
        self._all.add(account.id)
        self._owners.setdefault(account.owner, _IdSet()).add(account.id)
        for tag in account.tags:
            self._tags.setdefault(tag, _IdSet()).add(account.id)

    def _delete(self, account: Account) -> None:
        del self._accounts[account.id]
        del self._emails[account.email.casefold()]
        self._all.discard(account.id)
        self._owners[account.owner].discard(account.id)
        for tag in account.tags:
            self._tags[tag].discard(account.id)

    def _base(self, scope: Scope) -> Sequence[str]:
        """The ids of the smallest index that holds every account of ``scope``
        (a superset: callers still check ``scope.matches``)."""
        if scope.account_ids is not None:
            return sorted(key for key in scope.account_ids if key in self._accounts)
        options = [self._all]
        if scope.owner is not None:
            options.append(self._owners.get(scope.owner, _IdSet()))
        if scope.tag is not None:
            options.append(self._tags.get(scope.tag, _IdSet()))
        return min(options, key=len).ids

    def _pick(self, claim: Claim) -> Account | None:
        if claim.account_id is not None:
            account = self._accounts.get(claim.account_id)
            return account if account is not None and claim.allows(account) else None
        base = self._base(claim.scope)
        if not base:
            return None
        if claim.strategy is Strategy.RANDOM:
            for _ in range(min(len(base), _PROBES)):
                account = self._accounts[base[claim.rng.randrange(len(base))]]
                if claim.allows(account):
                    return account
        elif claim.strategy is Strategy.ROUND_ROBIN:
            return self._next_in_turn(claim, base)
        # Few eligible accounts (random), or least used: look at them all.
        return claim.pick(
            account for key in base if claim.allows(account := self._accounts[key])
        )

    def _next_in_turn(self, claim: Claim, base: Sequence[str]) -> Account | None:
        """The first eligible account after the scope's cursor, wrapping."""
        scope = claim.scope
        if scope.account_ids is not None:
            return claim.pick(
                account for key in base if claim.allows(account := self._accounts[key])
            )
        cursor_key = ("tag", scope.tag) if scope.tag else ("owner", scope.owner)
        start = self._cursors.get(cursor_key, 0)
        for step in range(len(base)):
            position = (start + step) % len(base)
            account = self._accounts[base[position]]
            if claim.allows(account):
                self._cursors[cursor_key] = position + 1
                return account
        return None

    def _end(self, lease: Lease, now: datetime, *, delivered: bool) -> None:
        with self._lock:
            account = self._accounts.get(lease.account_id)
            if account is not None:
                self._accounts[account.id] = account.with_lease_ended(
                    lease.expires_at, now, delivered=delivered, day=lease.day
                )
