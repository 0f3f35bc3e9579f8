"""Stateful property tests over every storage (hypothesis).

Random interleavings of claims, completions, releases, failures (quota,
throttling, transient, broken), status and limit changes, day changes, clock
jumps backwards and forwards, callers with skewed clocks and accounts in mixed
time zones must never let an account exceed its daily limit on any of its
days, never make a count negative, always keep the minimum wait after a
delivery, never claim a paused account, never lose a failure in a row, and
never put more than ``max_in_flight`` unexpired leases on one account. The
model below knows only those promises, not how a backend keeps them.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import workers
from contract import make_account
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)
from test_simple import DictStorage, Shelf

from mailpool import (
    Account,
    AccountStatus,
    Claim,
    JSONStorage,
    Lease,
    Scope,
    Storage,
    Strategy,
    open_storage,
)
from mailpool.models import Failure, FailureKind
from mailpool.storage import RecordsFailures, sql

START = datetime(2026, 3, 28, 22, 0, tzinfo=timezone.utc)  # DST ends in Europe soon
ZONES = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/Los_Angeles"]
LEASE_SECONDS = 120.0
ACCOUNTS = 3
MAX_FAILURES = 2


@contextlib.contextmanager
def _sql(kind: str) -> Iterator[Storage]:
    with (
        tempfile.TemporaryDirectory() as folder,
        workers.empty_storage_url(kind, Path(folder)) as url,
    ):
        storage = open_storage(url)
        try:
            yield storage
        finally:
            storage.close()


@contextlib.contextmanager
def _json() -> Iterator[Storage]:
    with tempfile.TemporaryDirectory() as folder:
        yield JSONStorage(Path(folder) / "accounts.json")


@contextlib.contextmanager
def _plain(factory: Callable[[], Storage]) -> Iterator[Storage]:
    yield factory()


BACKENDS: dict[str, Callable[[], contextlib.AbstractContextManager[Storage]]] = {
    "memory": lambda: _plain(lambda: open_storage("memory://")),
    "simple": lambda: _plain(lambda: DictStorage(Shelf())),
    "json": _json,
    "sqlite": lambda: _sql("sqlite"),
}
if workers.POSTGRES_URL:
    BACKENDS["postgresql"] = lambda: _sql("postgresql")


@dataclass
class Model:
    """What the storage must have done to one account, by its promises."""

    account: Account
    counts: dict[date, int] = field(default_factory=dict)
    """Units counted per day of the account (claims minus releases)."""
    last_day: date | None = None
    """The latest day any claim counted on: no claim may go back before it."""
    delivered_at: datetime | None = None
    """The latest delivery stamp (stamps never move back)."""
    open_leases: list[Lease] = field(default_factory=list)
    overtaken: set[int] = field(default_factory=set)
    """Open leases (by ``id()``) that ran out before a later claim took over."""
    early_frees: int = 0
    """Slots freed by an overtaken lease ended from a clock that had not yet
    reached its expiry: the documented tolerance of ``max_in_flight`` (exact
    up to the skew of the workers' clocks), until every lease has ended."""
    paused_until: datetime | None = None
    """The end of the longest pause recorded (it never moves back)."""
    failures: int = 0
    """Transient failures since the last delivery or change to ``error``."""


class StorageMachine(RuleBasedStateMachine):
    backend: str = "memory"

    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self._context = BACKENDS[self.backend]()
        self.storage = self._context.__enter__()
        self.clock = START
        self.models: dict[str, Model] = {}
        self.rng = random.Random(2026)  # replayable: the same picks each run
        sql._RANKS.seed(2026)  # and the same ranks for new SQL rows

    def teardown(self) -> None:
        self._context.__exit__(None, None, None)

    # -- set-up ------------------------------------------------------------------

    @rule(
        zone=st.sampled_from(ZONES),
        limit=st.integers(0, 3),
        wait=st.sampled_from([0.0, 30.0, 600.0]),
        slots=st.integers(1, 2),
    )
    def add_account(self, zone: str, limit: int, wait: float, slots: int) -> None:
        if len(self.models) >= ACCOUNTS:
            return
        account = self.storage.add(
            make_account(
                f"sender{len(self.models)}@example.com",
                timezone=zone,
                daily_limit=limit,
                min_wait_time=wait,
                max_in_flight=slots,
            )
        )
        self.models[account.id] = Model(account)

    # -- time --------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 29, 31, 121, 3600, 6 * 3600, 86400]))
    def time_passes(self, seconds: int) -> None:
        self.clock += timedelta(seconds=seconds)

    @rule(seconds=st.sampled_from([1, 3, 3600, 86400]))
    def clock_steps_back(self, seconds: int) -> None:
        self.clock -= timedelta(seconds=seconds)

    # -- the send path -----------------------------------------------------------

    @rule(
        target=leases,
        index=st.integers(0, ACCOUNTS - 1),
        skew=st.sampled_from([0, -3, 3, -7200]),
        strategy=st.sampled_from([None, *Strategy]),
    )
    def claim(self, index: int, skew: int, strategy: Strategy | None) -> Lease | None:
        if not self.models:
            return None
        now = self.clock + timedelta(seconds=skew)  # a worker with its own clock
        ids = sorted(self.models)
        request = Claim(
            Scope(),
            now,
            lease_seconds=LEASE_SECONDS,
            strategy=strategy or Strategy.RANDOM,
            account_id=None if strategy else ids[index % len(ids)],
            rng=self.rng,
        )
        lease = self.storage.claim(request)
        if lease is None:
            return None
        model = self.models[lease.account_id]
        account = model.account
        day = max(now.astimezone(_zone(account)).date(), model.last_day or date.min)
        assert account.status is AccountStatus.ACTIVE, "claimed an inactive account"
        assert lease.day == day, "the unit went to another day than its own"
        assert model.counts.get(day, 0) < account.daily_limit, "past the daily limit"
        if model.paused_until is not None:
            assert now >= model.paused_until, "claimed a paused account"
        if model.delivered_at is not None and account.min_wait_time > 0:
            assert now >= model.delivered_at + timedelta(
                seconds=account.min_wait_time
            ), "claimed inside the minimum wait"
        # A lease that a later claim found run out no longer holds a slot,
        # even for a caller whose clock reads an earlier time.
        alive = [
            held
            for held in model.open_leases
            if held.expires_at > now and id(held) not in model.overtaken
        ]
        if not alive:
            model.early_frees = 0
        assert len(alive) < account.max_in_flight + model.early_frees, (
            "more sends in flight than allowed"
        )
        model.overtaken |= {
            id(held) for held in model.open_leases if held.expires_at <= now
        }
        model.counts[day] = model.counts.get(day, 0) + 1
        model.last_day = day
        model.open_leases.append(lease)
        return lease

    @rule(lease=consumes(leases), skew=st.sampled_from([0, 5, -3]))
    def complete(self, lease: Lease | None, skew: int) -> None:
        if lease is None:
            return
        now = self.clock + timedelta(seconds=skew)
        self.storage.complete(lease, now)
        model = self.models[lease.account_id]
        self._end(model, lease, now)
        stamp = max(filter(None, [model.delivered_at, now]))
        model.delivered_at = stamp
        model.failures = 0

    @rule(
        index=st.integers(0, ACCOUNTS - 1),
        kind=st.sampled_from(FailureKind),
        skew=st.sampled_from([0, -3, 3]),
        cool_down=st.sampled_from([30.0, 600.0, 7200.0]),
    )
    def fail(self, index: int, kind: FailureKind, skew: int, cool_down: float) -> None:
        if not self.models:
            return
        key = sorted(self.models)[index % len(self.models)]
        model = self.models[key]
        at = self.clock + timedelta(seconds=skew)
        assert isinstance(self.storage, RecordsFailures)
        stored = self.storage.record_failure(
            key, Failure(kind, f"{kind.value} reply", at, cool_down, MAX_FAILURES)
        )
        assert stored is not None
        # The pause lasts at least until the next midnight of the account (a
        # quota) or the cool-down (throttled), and never gets shorter.
        pause = {
            FailureKind.QUOTA: datetime.combine(
                at.astimezone(_zone(stored)).date() + timedelta(days=1),
                datetime.min.time(),
                _zone(stored),
            ),
            FailureKind.THROTTLED: at + timedelta(seconds=cool_down),
        }.get(kind)
        ends = [end for end in (model.paused_until, pause) if end is not None]
        if ends:
            assert stored.paused_until is not None
            assert stored.paused_until >= max(ends), "a pause got shorter"
        model.paused_until = stored.paused_until
        before = model.account
        active = before.status is AccountStatus.ACTIVE
        status = before.status
        last_error: str | None = f"{kind.value} reply"
        if kind in (FailureKind.REVIVED, FailureKind.PROBE_FAILED):
            # A probe's outcome applies only to an error that mailpool set.
            last_error = before.last_error
            if before.revivable and kind is FailureKind.REVIVED:
                status, model.failures = AccountStatus.ACTIVE, 0
            elif before.revivable:
                last_error, model.failures = f"{kind.value} reply", model.failures + 1
        elif kind is FailureKind.BROKEN and active:
            status, model.failures = AccountStatus.ERROR, 0
        elif kind is FailureKind.TRANSIENT:
            model.failures += 1
            if active and model.failures >= MAX_FAILURES:
                status, model.failures = AccountStatus.ERROR, 0
                last_error = f"{MAX_FAILURES} failures in a row; the last: {last_error}"
        assert stored.status is status
        assert stored.last_error == last_error
        model.account = stored

    @rule(lease=consumes(leases))
    def release(self, lease: Lease | None) -> None:
        if lease is None:
            return
        self.storage.release(lease, self.clock)
        model = self.models[lease.account_id]
        self._end(model, lease, self.clock)
        if model.last_day == lease.day and model.counts.get(lease.day, 0) > 0:
            model.counts[lease.day] -= 1

    @staticmethod
    def _end(model: Model, lease: Lease, now: datetime) -> None:
        model.open_leases.remove(lease)
        if id(lease) in model.overtaken:
            model.overtaken.discard(id(lease))
            if now < lease.expires_at:
                model.early_frees += 1

    # -- settings changes ------------------------------------------------------------

    @rule(index=st.integers(0, ACCOUNTS - 1), status=st.sampled_from(AccountStatus))
    def set_status(self, index: int, status: AccountStatus) -> None:
        self._change(index, status=status)

    @rule(index=st.integers(0, ACCOUNTS - 1), limit=st.integers(0, 3))
    def set_limit(self, index: int, limit: int) -> None:
        self._change(index, daily_limit=limit)

    def _change(self, index: int, **changes: object) -> None:
        if not self.models:
            return
        key = sorted(self.models)[index % len(self.models)]
        stored = self.storage.get(key)
        self.models[key].account = self.storage.update(stored.replace(**changes))

    # -- what must always hold -----------------------------------------------------

    @invariant()
    def counts_match_and_are_never_negative(self) -> None:
        for key, model in self.models.items():
            stored = self.storage.get(key)
            assert stored.sent_count >= 0
            if model.last_day is not None:
                assert stored.count_day == model.last_day
                assert stored.sent_count == model.counts[model.last_day]
            # A status change never touches the counters.
            assert stored.daily_limit == model.account.daily_limit
            assert stored.consecutive_failures == model.failures
            assert stored.paused_until == model.paused_until

    @invariant()
    def only_active_accounts_are_claimed(self) -> None:
        for model in self.models.values():
            for lease in model.open_leases:
                assert lease.account.status is AccountStatus.ACTIVE


def _zone(account: Account) -> timezone | ZoneInfo:
    return timezone.utc if account.timezone == "UTC" else ZoneInfo(account.timezone)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_no_interleaving_breaks_a_promise(backend: str) -> None:
    machine: type[StorageMachine] = type(
        f"{backend.title()}Machine", (StorageMachine,), {"backend": backend}
    )
    heavy = backend in ("json", "sqlite", "postgresql")
    runner = machine.TestCase
    runner.settings = settings(
        max_examples=25 if heavy else 100,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    runner().runTest()
