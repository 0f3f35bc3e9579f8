"""DjangoStorage: the :class:`~mailpool.Storage` protocol over the app's models.

Accounts are :class:`~mailpool.contrib.django.models.EmailAccount` rows in the
project's own database (any alias of ``DATABASES``), so an
``AccountPool(DjangoStorage())`` sends through the accounts the admin shows.

How a claim stays atomic: it runs in one transaction that first locks the row
it picks, then re-checks on the locked row, with mailpool's own rules
(:meth:`Claim.allows`, :meth:`Account.with_claim`), that the account may still
be claimed, and writes the new counts.

- PostgreSQL (and other databases with ``SELECT ... FOR UPDATE``): the pick
  is ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1``, so concurrent claims never
  queue behind one row but take the next eligible one; only when every
  eligible row is locked does a claim wait for one, so ``None`` means that no
  account was eligible (not that the others were busy claiming).
- SQLite: the transaction's first statement is a write, which takes SQLite's
  write lock at once (as ``BEGIN IMMEDIATE`` would); claims then run one at a
  time, which for SQLite is the fastest way anyway.

Each strategy walks an index in its own order and stops at the first eligible
row: random picks the first row at or after a random ``rank`` (wrapping
around; a claimed row gets a new random rank), round robin the oldest
``lease_until`` (never claimed first, then by id), least used the fewest sends
on the claim's day (then by id).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from django.db import DatabaseError, IntegrityError, connections, router, transaction
from django.db.models import (
    Case,
    DateField,
    F,
    IntegerField,
    Q,
    QuerySet,
    Value,
    When,
)

from mailpool.contrib.django.models import (
    EmailAccount,
    EmailAccountTag,
    check_lengths,
    ready_at,
    to_db,
)
from mailpool.errors import (
    AccountNotFound,
    ConfigurationError,
    MailpoolError,
    StorageError,
)
from mailpool.models import Account, AccountStatus, Failure, zone_of
from mailpool.storage.base import (
    CANDIDATE_SAMPLE,
    Claim,
    Lease,
    Strategy,
    duplicate_email,
    duplicate_id,
)

__all__ = ["DjangoStorage"]

log = logging.getLogger("mailpool.storage.django")

_PICK_ATTEMPTS = 8
"""Rows a claim locks and re-checks before it gives up on a pick whose
database filter and mailpool's rules disagree (they should not)."""
_ZONES_TTL = 60.0
"""Seconds the map of stored time zones is kept before it is read again."""
_CHUNK = 500
"""Ids or emails per ``IN (...)`` lookup."""

T = TypeVar("T")


class _ThreadConnections:
    """Closes, when its thread ends, the database connections that storage
    calls opened in it (Django closes a request's connections itself, but
    not those of threads it does not know about, e.g. ``send_many``'s)."""

    def __init__(self) -> None:
        # The thread's own wrappers: this finalizer runs after the thread
        # ended, where connections[alias] would be another thread's.
        self.wrappers: dict[str, Any] = {}

    def __del__(self) -> None:
        for wrapper in self.wrappers.values():
            with contextlib.suppress(Exception):
                raw = wrapper.connection
                if raw is not None:
                    raw.close()


_THREAD = threading.local()


def _close_at_thread_exit(alias: str) -> None:
    if threading.current_thread() is threading.main_thread():
        return
    tracker = getattr(_THREAD, "connections", None)
    if tracker is None:
        tracker = _THREAD.connections = _ThreadConnections()
    if alias not in tracker.wrappers:
        tracker.wrappers[alias] = connections[alias]


class _Rejected(Exception):
    """The picked row may not be claimed after all (rolls its savepoint back)."""

    def __init__(self, account_id: str) -> None:
        super().__init__(account_id)
        self.account_id = account_id


class DjangoStorage:
    """Accounts in the Django project's database, through the ORM.

    :param using: the ``DATABASES`` alias; by default the one the database
        routers choose for writing :class:`EmailAccount` (``"default"``).

    Every method may be called from any thread (each uses the thread's own
    database connection). A claim inside a transaction of the caller (e.g. with
    ``ATOMIC_REQUESTS``) becomes part of it: its row lock is held, and its count
    kept, only when that transaction commits; send from outside transactions,
    or give the storage its own alias of the same database.

    .. versionadded:: 0.2
    """

    def __init__(self, using: str | None = None) -> None:
        self._using = using
        self._zones_lock = threading.Lock()
        self._zones_cache: frozenset[str] | None = None
        self._zones_read = 0.0

    @property
    def using(self) -> str:
        """The database alias in use."""
        return self._using or router.db_for_write(EmailAccount)

    def __repr__(self) -> str:
        return f"<DjangoStorage database={self.using!r}>"

    # ------------------------------------------------------------ plumbing

    @property
    def _location(self) -> str:
        return f"the Django database {self.using!r}"

    def _rows(self) -> QuerySet[EmailAccount]:
        _close_at_thread_exit(self.using)
        return EmailAccount.objects.using(self.using)

    @contextlib.contextmanager
    def _map_errors(
        self, action: str, clash: Callable[[], ConfigurationError | None] | None = None
    ) -> Iterator[None]:
        """Turn database errors into StorageError (the one place that does);
        an integrity error that ``clash`` explains becomes its error."""
        try:
            yield
        except MailpoolError:
            raise
        except DatabaseError as exc:
            if clash is not None and isinstance(exc, IntegrityError):
                found = clash()
                if found is not None:
                    raise found from exc
            lines = str(exc).strip().splitlines()
            text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
            password = connections[self.using].settings_dict.get("PASSWORD")
            if password:
                text = text.replace(str(password), "***")
            message = f"could not {action} in {self._location}: {text}"
            log.debug("%s", message)
            raise StorageError(message, location=self._location) from exc

    @contextlib.contextmanager
    def _write(
        self, action: str, clash: Callable[[], ConfigurationError | None] | None = None
    ) -> Iterator[None]:
        """A transaction that holds the write lock of a SQLite database from
        its first statement (other databases lock the rows they touch)."""
        with self._map_errors(action, clash), transaction.atomic(using=self.using):
            connection = connections[self.using]
            if connection.vendor == "sqlite":
                quote = connection.ops.quote_name
                table, rank = quote(EmailAccount._meta.db_table), quote("rank")
                with connection.cursor() as cursor:
                    cursor.execute(f"UPDATE {table} SET {rank} = {rank} WHERE 0 = 1")
            yield

    @property
    def _skips_locked_rows(self) -> bool:
        features = connections[self.using].features
        return bool(features.has_select_for_update_skip_locked)

    def _locked(self, queryset: QuerySet[EmailAccount]) -> QuerySet[EmailAccount]:
        """``queryset`` locking the rows it reads (where the database can)."""
        if connections[self.using].features.has_select_for_update:
            return queryset.select_for_update()
        return queryset

    def _account_of(self, row: EmailAccount, tags: Iterable[str]) -> Account:
        try:
            return row.to_account(tags)
        except ConfigurationError as exc:
            raise StorageError(
                f"account {row.pk!r} in {self._location} is invalid: {exc}",
                location=self._location,
            ) from exc

    def _load(self, queryset: QuerySet[EmailAccount]) -> list[Account]:
        """The accounts of ``queryset`` with their tags (two queries)."""
        rows = list(queryset)
        if not rows:
            return []
        tags: dict[str, list[str]] = {row.pk: [] for row in rows}
        for chunk in _chunks(list(tags), _CHUNK):
            pairs = EmailAccountTag.objects.using(self.using).filter(
                account_id__in=chunk
            )
            for account_id, tag in pairs.values_list("account_id", "tag"):
                tags[account_id].append(tag)
        return [self._account_of(row, tags[row.pk]) for row in rows]

    def _find_clash(
        self, accounts: Sequence[Account], *, new: bool
    ) -> ConfigurationError | None:
        """The error for the first of ``accounts`` whose id (``new``) or email
        another stored account has."""
        rows = self._rows()
        if new:
            ids = [account.id for account in accounts]
            for chunk in _chunks(ids, _CHUNK):
                taken = rows.filter(pk__in=chunk).values_list("pk", flat=True).first()
                if taken is not None:
                    return duplicate_id(taken)
        by_key = {account.email.casefold(): account for account in accounts}
        for chunk in _chunks(list(by_key), _CHUNK):
            for key, other in rows.filter(email_key__in=chunk).values_list(
                "email_key", "pk"
            ):
                account = by_key[key]
                if new or other != account.id:
                    return duplicate_email(account.email, other)
        return None

    # ------------------------------------------------------------ accounts

    def add(self, account: Account, /) -> Account:
        """Store a new account; see :meth:`Storage.add`."""
        self.add_many([account])
        return account

    def add_many(self, accounts: Iterable[Account], /) -> int:
        """Store new accounts in one transaction, all or none; see
        :meth:`Storage.add_many`."""
        new = list(accounts)
        ids: set[str] = set()
        emails: dict[str, str] = {}
        for account in new:
            check_lengths(account)
            if account.id in ids:
                raise duplicate_id(account.id)
            other = emails.setdefault(account.email.casefold(), account.id)
            if other != account.id:
                raise duplicate_email(account.email, other)
            ids.add(account.id)
        if not new:
            return 0
        rows = [EmailAccount.from_account(account) for account in new]
        tags = [
            EmailAccountTag(account_id=account.id, tag=tag)
            for account in new
            for tag in sorted(account.tags)
        ]
        clash = functools.partial(self._find_clash, new, new=True)
        with self._write("add accounts", clash):
            found = clash()
            if found is not None:
                raise found
            EmailAccount.objects.using(self.using).bulk_create(rows, batch_size=_CHUNK)
            EmailAccountTag.objects.using(self.using).bulk_create(
                tags, batch_size=_CHUNK
            )
        self._note_zones(new)
        log.debug("added %d accounts", len(new))
        return len(new)

    def get(self, account_id: str, /) -> Account:
        """See :meth:`Storage.get`."""
        with self._map_errors("read an account"):
            found = self._load(self._rows().filter(pk=account_id))
        if not found:
            raise AccountNotFound(account_id, location=self._location)
        return found[0]

    def get_by_email(self, email: str, /) -> Account:
        """See :meth:`Storage.get_by_email`."""
        key = email.strip().casefold()
        with self._map_errors("read an account"):
            found = self._load(self._rows().filter(email_key=key))
        if not found:
            raise AccountNotFound(email, location=self._location)
        return found[0]

    def accounts(
        self,
        *,
        owner: str | None = None,
        tag: str | None = None,
        status: AccountStatus | None = None,
    ) -> list[Account]:
        """See :meth:`Storage.accounts`."""
        rows = self._rows()
        if owner is not None:
            rows = rows.filter(owner=owner)
        if tag is not None:
            rows = rows.filter(tag_set__tag=tag)
        if status is not None:
            rows = rows.filter(status=AccountStatus(status).value)
        with self._map_errors("list accounts"):
            found = self._load(rows)
        return sorted(found, key=lambda account: (account.email.casefold(), account.id))

    def update(self, account: Account, /) -> Account:
        """See :meth:`Storage.update`: settings change, usage counters stay."""
        check_lengths(account)
        clash = functools.partial(self._find_clash, [account], new=False)
        with self._write("update an account", clash):
            row = self._locked(self._rows().filter(pk=account.id)).first()
            if row is None:
                raise AccountNotFound(account.id, location=self._location)
            found = clash()
            if found is not None:
                raise found
            row.apply_settings(account)
            row.save(using=self.using)  # settings only, and ready_at
            self._note_zones([account])
            row.set_tags(account.tags)
            return self._load(self._rows().filter(pk=account.id))[0]

    def remove(self, account_id: str, /) -> None:
        """See :meth:`Storage.remove`."""
        with self._write("remove an account"):
            _, deleted = self._rows().filter(pk=account_id).delete()
            if not deleted.get(EmailAccount._meta.label):
                raise AccountNotFound(account_id, location=self._location)
        log.debug("removed account %s", account_id)

    # ------------------------------------------------------------ send path

    # Each account counts on its own day: the date of the claim's ``now`` in
    # the account's time zone. The database learns those days from a map
    # {day: zone names} of the zones stored (cached for _ZONES_TTL seconds,
    # and refreshed as soon as a row's zone turns out to be missing from it);
    # a row in a zone missing from the map gets a looser filter, which never
    # refuses what mailpool's rules allow (they decide on the locked row).

    def _zones(self) -> frozenset[str]:
        """The time zones of the stored accounts (cached)."""
        with self._zones_lock:
            expired = time.monotonic() - self._zones_read > _ZONES_TTL
            if self._zones_cache is None or expired:
                names = self._rows().values_list("timezone", flat=True).distinct()
                self._zones_cache = frozenset(str(name) for name in names)
                self._zones_read = time.monotonic()
            return self._zones_cache

    def _note_zones(self, accounts: Iterable[Account]) -> None:
        with self._zones_lock:
            if self._zones_cache is not None:
                self._zones_cache |= {account.timezone for account in accounts}

    def _forget_zones(self) -> None:
        with self._zones_lock:
            self._zones_cache = None

    def _local_days(self, now: datetime) -> dict[date, list[str]]:
        """{the date of ``now`` there: zone names} for the stored zones."""
        days: dict[date, list[str]] = {}
        for name in sorted(self._zones() | {"UTC"}):
            try:
                day = now.astimezone(zone_of(name)).date()
            except ValueError:
                continue  # an invalid row: its to_account() reports it
            days.setdefault(day, []).append(name)
        return days

    def _allowed(self, claim: Claim) -> QuerySet[EmailAccount]:
        """The rows ``claim`` allows, as the database can tell
        (:meth:`Claim.allows` in SQL)."""
        now = to_db(claim.now)
        days = self._local_days(claim.now)
        known = sorted(name for names in days.values() for name in names)
        # Under the daily limit on the account's day (a count from an earlier
        # day reads as 0). Local days lie within a day of the UTC date.
        under_limit = ~Q(timezone__in=known) & _under_limit_on_some_day(
            claim.day + timedelta(days=1)
        )
        for day, names in days.items():
            under_limit |= Q(timezone__in=names) & _under_limit(day)
        rows = self._rows().filter(
            under_limit,
            Q(status=AccountStatus.ACTIVE.value),
            # The minimum wait since the last delivery is over.
            Q(min_wait_time__lte=0) | Q(ready_at__isnull=True) | Q(ready_at__lte=now),
            # Not paused by a quota or throttling reply.
            Q(paused_until__isnull=True) | Q(paused_until__lte=now),
            # A send slot is free, or every lease has run out.
            Q(in_flight__lt=F("max_in_flight"))
            | Q(lease_until__isnull=True)
            | Q(lease_until__lte=now),
        )
        scope = claim.scope
        if scope.owner is not None:
            rows = rows.filter(owner=scope.owner)
        if scope.tag is not None:
            rows = rows.filter(tag_set__tag=scope.tag)
        if scope.account_ids is not None:
            rows = rows.filter(pk__in=sorted(scope.account_ids))
        if claim.exclude:
            rows = rows.exclude(pk__in=sorted(claim.exclude))
        if claim.account_id is not None:
            rows = rows.filter(pk=claim.account_id)
        return rows

    def _walks(self, claim: Claim, *, whole: bool) -> list[tuple[Q, tuple[Any, ...]]]:
        """(filter, order) of each index range a pick walks, in turn; with
        ``whole``, one walk over every allowed row in the strategy's order
        (for a pick that waits for locks: the database re-checks the filter
        on a row it waited for, and a range split on a column that the other
        claim changed, such as ``rank``, would drop it)."""
        if claim.account_id is not None:
            return [(Q(), ())]
        if claim.strategy is Strategy.ROUND_ROBIN:
            return [(Q(), (F("lease_until").asc(nulls_first=True), "id"))]
        if claim.strategy is Strategy.LEAST_USED:
            # Sends on each account's own day, then the lowest id: this
            # compares every allowed account in scope.
            local_day = Case(
                *(
                    When(timezone__in=names, then=Value(day))
                    for day, names in self._local_days(claim.now).items()
                ),
                default=Value(claim.day),
                output_field=DateField(),
            )
            sent_today = Case(
                When(count_day__gte=local_day, then=F("sent_count")),
                default=Value(0),
                output_field=IntegerField(),
            )
            return [(Q(), (sent_today, "id"))]
        if whole:
            return [(Q(), ("rank",))]
        r = claim.rng.random()
        return [(Q(rank__gte=r), ("rank",)), (Q(rank__lt=r), ("rank",))]

    def _pick(
        self, claim: Claim, skip: set[str], lock: str | None
    ) -> EmailAccount | None:
        """The first allowed row of the strategy's walk (not in
        ``skip``), locked with ``lock="skip"`` (rows other claims locked are
        skipped), or None."""
        features = connections[self.using].features
        rows = self._allowed(claim)
        if skip:
            rows = rows.exclude(pk__in=sorted(skip))
        for where, order in self._walks(claim, whole=False):
            walk = rows.filter(where).order_by(*order)
            if lock is not None and features.has_select_for_update:
                options: dict[str, Any] = {}
                if lock == "skip" and features.has_select_for_update_skip_locked:
                    options["skip_locked"] = True
                if features.has_select_for_update_of:
                    options["of"] = ("self",)
                walk = walk.select_for_update(**options)
            found: EmailAccount | None = walk.first()
            if found is not None:
                return found
        return None

    def candidates(
        self, claim: Claim, /, *, limit: int = CANDIDATE_SAMPLE
    ) -> list[Account]:
        """See :meth:`Storage.candidates`: the first ``limit`` allowed rows at
        or after a random rank (wrapping around), read without locks."""
        if limit <= 0:
            return []
        rows = self._allowed(claim)
        r = claim.rng.random()
        with self._map_errors("find candidate accounts"):
            found = self._load(rows.filter(rank__gte=r).order_by("rank")[:limit])
            if len(found) < limit:
                more = rows.filter(rank__lt=r).order_by("rank")
                found += self._load(more[: limit - len(found)])
        return [
            account.as_of(account.local_day(claim.now))
            for account in found
            if claim.allows(account)
        ]

    def claim(self, claim: Claim, /) -> Lease | None:
        """Pick, lock and count in one transaction; see :meth:`Storage.claim`
        and the module documentation."""
        with self._write("claim an account"):
            claimed = self._claim_locked(claim)
        if claimed is None:
            log.debug("no account to claim in %s", claim.scope.describe())
            return None
        return Lease.of(claimed, claim)

    def _claim_locked(self, claim: Claim) -> Account | None:
        rejected: set[str] = set()
        for _ in range(_PICK_ATTEMPTS):
            try:
                # A savepoint per pick: a row that turns out not to be
                # claimable is unlocked again at once (one claim never holds
                # two row locks, so claims cannot deadlock).
                with transaction.atomic(using=self.using):
                    return self._claim_one(claim, rejected)
            except _Rejected as exc:
                rejected.add(exc.account_id)
                self._forget_zones()  # maybe a zone stored since the map was read
        log.warning(
            "gave up a claim after %d accounts turned out not to be claimable",
            len(rejected),
        )
        return None

    def _claim_one(self, claim: Claim, rejected: set[str]) -> Account | None:
        row = self._pick(claim, rejected, "skip")
        if row is None and self._skips_locked_rows:
            # Every allowed row may be locked by other claims right now: wait
            # for one rather than refuse.
            waited = self._pick_waiting(claim, rejected)
            row = None if waited is None else self._rows().get(pk=waited)
        if row is None:
            return None
        picked = str(row.pk)
        tags = EmailAccountTag.objects.using(self.using).filter(account_id=picked)
        account = self._account_of(row, tags.values_list("tag", flat=True))
        if not claim.allows(account):
            raise _Rejected(picked)
        claimed = account.with_claim(claim.now, claim.lease_until())
        self._rows().filter(pk=picked).update(
            sent_count=claimed.sent_count,
            count_day=claimed.count_day,
            in_flight=claimed.in_flight,
            lease_until=to_db(claimed.lease_until),
            rank=claim.rng.random(),
        )
        return claimed

    def _pick_waiting(self, claim: Claim, rejected: set[str]) -> str | None:
        """The first allowed row in the strategy's order, locked after
        waiting for the claim that holds it; the database re-checks on the
        row as that claim left it that it is still allowed.

        :raises _Rejected: when it no longer is.
        """
        rows = self._allowed(claim)
        if rejected:
            rows = rows.exclude(pk__in=sorted(rejected))
        [(_, order)] = self._walks(claim, whole=True)
        first = rows.order_by(*order).values_list("pk", flat=True).first()
        if first is None:
            return None
        locking = self._allowed(claim).filter(pk=first).select_for_update()
        if connections[self.using].features.has_select_for_update_of:
            locking = locking.select_for_update(of=("self",))
        if locking.values_list("pk", flat=True).first() is None:
            raise _Rejected(str(first))
        return str(first)

    def complete(self, lease: Lease, now: datetime, /) -> None:
        """See :meth:`Storage.complete`."""
        self._end(lease, now, delivered=True)

    def release(self, lease: Lease, now: datetime, /) -> None:
        """See :meth:`Storage.release`."""
        self._end(lease, now, delivered=False)

    def _end(self, lease: Lease, now: datetime, *, delivered: bool) -> None:
        action = "complete a lease" if delivered else "release a lease"
        with self._write(action):
            row = self._locked(self._rows().filter(pk=lease.account_id)).first()
            if row is None:
                return
            account = self._account_of(row, ())
            ended = account.with_lease_ended(
                lease.expires_at, now, delivered=delivered, day=lease.day
            )
            if ended is account:
                return
            self._rows().filter(pk=row.pk).update(
                sent_count=ended.sent_count,
                in_flight=ended.in_flight,
                last_sent_at=to_db(ended.last_sent_at),
                ready_at=to_db(ready_at(ended.last_sent_at, ended.min_wait_time)),
                consecutive_failures=ended.consecutive_failures,
            )

    def record_failure(self, account_id: str, failure: Failure, /) -> Account | None:
        """Apply ``failure`` on the locked row by the rule of
        :meth:`Account.with_failure`; see
        :meth:`~mailpool.storage.base.RecordsFailures.record_failure`."""
        with self._write("record a failure"):
            row = self._locked(self._rows().filter(pk=account_id)).first()
            if row is None:
                return None
            tags = EmailAccountTag.objects.using(self.using).filter(account_id=row.pk)
            account = self._account_of(row, tags.values_list("tag", flat=True))
            failed = account.with_failure(failure)
            pause_kind = failed.pause_kind
            self._rows().filter(pk=row.pk).update(
                status=failed.status.value,
                status_reason=failed.status_reason,
                paused_until=to_db(failed.paused_until),
                pause_kind=None if pause_kind is None else pause_kind.value,
                consecutive_failures=failed.consecutive_failures,
                last_error=failed.last_error,
                last_error_at=to_db(failed.last_error_at),
            )
        return failed

    def reset_daily_counts(self, *, owner: str | None = None) -> int:
        """See :meth:`Storage.reset_daily_counts`."""
        rows = self._rows().filter(sent_count__gt=0)
        if owner is not None:
            rows = rows.filter(owner=owner)
        with self._map_errors("reset the daily counts"):
            reset = rows.update(sent_count=0)
        log.info("reset the daily counts of %d accounts", reset)
        return int(reset)

    def close(self) -> None:
        """Nothing to release: Django manages the database connections."""


def _under_limit(day: date) -> Q:
    """Rows whose account is under its daily limit on ``day`` (its own day)."""
    return Q(count_day__gte=day, sent_count__lt=F("daily_limit")) | (
        (Q(count_day__isnull=True) | Q(count_day__lt=day)) & Q(daily_limit__gt=0)
    )


def _under_limit_on_some_day(latest: date) -> Q:
    """Rows under the daily limit on some day up to ``latest`` (for a zone
    whose day is not known)."""
    return Q(sent_count__lt=F("daily_limit")) | (
        Q(daily_limit__gt=0) & (Q(count_day__isnull=True) | Q(count_day__lt=latest))
    )


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
