"""Real-process proofs: limits hold across processes, a killed worker blocks an
account only until its lease runs out, and crashes lose nothing.

Child processes are started with the ``spawn`` method and run the functions in
workers.py. The claim proofs run against every shared backend: a JSON
file, a SQLite file, and PostgreSQL when ``MAILPOOL_TEST_POSTGRES_URL`` is set
(each test on an empty storage: new files, or a fresh PostgreSQL schema).
Pass or fail never depends on timing: the workers use the real clock, but the
assertions only count what the storage let through.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import stat
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import workers
from filelock import FileLock
from workers import Won

from mailpool import (
    Account,
    Claim,
    JSONStorage,
    Scope,
    SMTPSettings,
    Storage,
    open_storage,
)

pytestmark = pytest.mark.integration

SPAWN = multiprocessing.get_context("spawn")


# An empty storage of each kind (a fresh schema for PostgreSQL).
storage_url = workers.storage_url_fixture()


@pytest.fixture
def owner() -> str:
    """A fresh owner: the proof's accounts, apart from anything else stored."""
    return f"proof-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def shared(storage_url: str, owner: str) -> Iterator[Storage]:
    """The storage as the parent sees it; the proof's accounts are removed after."""
    storage = open_storage(storage_url)
    try:
        yield storage
    finally:
        for account in storage.accounts(owner=owner):
            storage.remove(account.id)
        storage.close()


def proof_account(owner: str, n: int, **fields: Any) -> Account:
    return Account(
        email=f"{owner}-{n}@example.com",
        owner=owner,
        smtp=SMTPSettings(host="smtp.example.com", username="u", password="pw"),
        **fields,
    )


def run_claimers(url: str, owner: str, processes: int, threads: int) -> list[Won]:
    """Run ``workers.claim_until_exhausted`` in ``processes`` children and
    return every claim they made."""
    batches = workers.run_children(
        workers.claim_until_exhausted,
        (url, owner),
        processes=processes,
        threads=threads,
    )
    return [won for process in batches for thread in process for won in thread]


def test_processes_never_claim_past_the_daily_limit(
    storage_url: str, shared: Storage, owner: str
) -> None:
    accounts = [
        shared.add(proof_account(owner, n, daily_limit=40, min_wait_time=0))
        for n in range(5)
    ]
    won = run_claimers(storage_url, owner, processes=4, threads=8)

    per_day = Counter((account_id, day) for account_id, day, _ in won)
    # Normally every claim is on one day. Should the run straddle midnight
    # UTC, the limit holds on each day and the workers only stop when the
    # last day is full.
    last_day = max(day for _, day, _ in won)
    assert all(count <= 40 for count in per_day.values())
    for account in accounts:
        assert per_day[(account.id, last_day)] == 40
        todays = sorted(n for a, d, n in won if a == account.id and d == last_day)
        assert todays == list(range(1, 41))  # each unit handed out exactly once
    if all(day == last_day for _, day, _ in won):
        assert len(won) == 200
    for account in accounts:
        stored = shared.get(account.id)
        assert (stored.sent_count, stored.count_day, stored.in_flight) == (
            40,
            date.fromisoformat(last_day),
            0,
        )


def test_processes_get_every_claim_the_daily_limit_allows(
    storage_url: str, shared: Storage, owner: str
) -> None:
    # The proof above loops until the accounts are full, so it would still
    # pass if some claims were refused by mistake (on PostgreSQL: skipped as
    # locked by another claim, then given up). Here the attempts add up to
    # exactly the daily limit, with a send slot for each: every one must be
    # granted.
    processes, threads, attempts = 4, 8, 5
    limit = processes * threads * attempts
    account = shared.add(
        proof_account(
            owner,
            0,
            daily_limit=limit,
            min_wait_time=0,
            max_in_flight=processes * threads,
        )
    )
    batches = workers.run_children(
        workers.claim_n_times,
        (storage_url, owner, attempts),
        processes=processes,
        threads=threads,
    )

    tries: list[Won | None] = [
        won for process in batches for thread in process for won in thread
    ]
    assert len(tries) == limit
    refused = tries.count(None)
    assert refused == 0, f"{refused} of {limit} allowed claims were refused"
    won = [entry for entry in tries if entry is not None]
    if len({day for _, day, _ in won}) == 1:  # not straddling midnight UTC
        assert sorted(count for _, _, count in won) == list(range(1, limit + 1))
        assert shared.get(account.id).sent_count == limit


def test_processes_respect_the_min_wait(
    storage_url: str, shared: Storage, owner: str
) -> None:
    # The first claim holds the only slot until its delivery; from then on the
    # hour's wait refuses everyone.
    account = shared.add(proof_account(owner, 0, daily_limit=100, min_wait_time=3600))
    won = run_claimers(storage_url, owner, processes=4, threads=4)
    assert [account_id for account_id, _, _ in won] == [account.id]
    stored = shared.get(account.id)
    assert (stored.sent_count, stored.in_flight) == (1, 0)


def test_processes_never_hold_more_leases_than_max_in_flight(
    storage_url: str, shared: Storage, owner: str
) -> None:
    accounts = [
        shared.add(proof_account(owner, n, daily_limit=1000, max_in_flight=3))
        for n in range(2)
    ]
    batches = workers.run_children(
        workers.claim_and_hold,
        (storage_url, owner, 3),
        processes=4,
        threads=4,
    )
    won = [w for process in batches for thread in process for w in thread if w]
    assert Counter(account_id for account_id, _, _ in won) == {
        account.id: 3 for account in accounts
    }
    for account in accounts:
        assert shared.get(account.id).in_flight == 3


def test_the_lease_of_a_killed_worker_runs_out(
    storage_url: str, shared: Storage, owner: str
) -> None:
    # The worker claims and dies (kill -9) without completing or releasing:
    # the account is blocked until the lease runs out, and the unit stays
    # counted. Fixed moments, not the real clock.
    moment = datetime(2024, 5, 17, 12, 0, tzinfo=timezone.utc)
    account = shared.add(proof_account(owner, 0, daily_limit=5, min_wait_time=0))
    child = SPAWN.Process(
        target=workers.claim_and_die,
        args=(storage_url, account.id, moment.isoformat(), 60.0),
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    stored = shared.get(account.id)
    assert (stored.sent_count, stored.in_flight) == (1, 1)
    assert stored.lease_until == moment + timedelta(seconds=60)
    scope = Scope(owner=owner)
    blocked = Claim(scope=scope, now=moment + timedelta(seconds=59))
    assert shared.claim(blocked) is None
    lease = shared.claim(Claim(scope=scope, now=moment + timedelta(seconds=60)))
    assert lease is not None and lease.account_id == account.id
    stored = shared.get(account.id)
    assert (stored.sent_count, stored.in_flight) == (2, 1)


def test_a_killed_writer_never_damages_the_json_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    lock_path = tmp_path / "accounts.json.lock"
    storage = JSONStorage(path)
    ids = {
        storage.add(proof_account("crash", n, daily_limit=1000, min_wait_time=0)).id
        for n in range(50)
    }
    rng = random.Random()
    deadline = time.monotonic() + 20
    rounds = 0
    while rounds < 15 and (rounds < 3 or time.monotonic() < deadline):
        rounds += 1
        ready = SPAWN.Event()
        child = SPAWN.Process(
            target=workers.churn_json_file, args=(str(path), ready), daemon=True
        )
        child.start()
        try:
            assert ready.wait(60), "the writer never got going"
            time.sleep(rng.uniform(0, 0.15))
        finally:
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(30)
        assert child.exitcode == -signal.SIGKILL

        # The lock file outlives its killed holder, but the kernel dropped the
        # flock with the process: the next opener gets it at once.
        assert lock_path.exists()
        probe = FileLock(lock_path)
        probe.acquire(blocking=False)
        probe.release()

        # The file is whole: valid JSON, every account present and valid.
        json.loads(path.read_text(encoding="utf-8"))
        fresh = JSONStorage(path, timeout=5)
        accounts = fresh.accounts()
        assert {account.id for account in accounts} == ids
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # And it is writable again (this also sweeps the killed writer's
        # temporary file, if it died mid-write).
        fresh.update(accounts[0].replace(sender_name=f"After kill {rounds}"))
        fresh.close()

    assert rounds >= 3
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"accounts.json", "accounts.json.lock"}
