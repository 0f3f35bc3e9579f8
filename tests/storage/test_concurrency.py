"""Real-process proofs: limits hold across processes, and crashes lose nothing.

Child processes are started with the ``spawn`` method and run the functions in
workers.py. The reservation proofs run against every shared backend: a JSON
file, a SQLite file, and PostgreSQL when ``MAILPOOL_TEST_POSTGRES_URL`` is set.
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
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import workers
from filelock import FileLock

from mailpool import Account, JSONStorage, SMTPSettings, Storage, open_storage

pytestmark = pytest.mark.integration

SPAWN = multiprocessing.get_context("spawn")
POSTGRES_URL = os.environ.get("MAILPOOL_TEST_POSTGRES_URL")


def _sqlalchemy_missing() -> bool:
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        return True
    return False


NO_SQLALCHEMY = _sqlalchemy_missing()

STORAGE_KINDS = [
    pytest.param("json", id="json"),
    pytest.param(
        "sqlite",
        id="sqlite",
        marks=pytest.mark.skipif(
            NO_SQLALCHEMY, reason="SQLAlchemy is not installed (mailpool[sql])"
        ),
    ),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=pytest.mark.skipif(
            NO_SQLALCHEMY or not POSTGRES_URL,
            reason="set MAILPOOL_TEST_POSTGRES_URL (and install mailpool[postgres]) "
            "to run the PostgreSQL proofs",
        ),
    ),
]


@pytest.fixture(params=STORAGE_KINDS)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    kind = request.param
    if kind == "json":
        return f"json://{tmp_path / 'accounts.json'}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'accounts.db'}"
    assert POSTGRES_URL is not None
    return POSTGRES_URL


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


def run_reservers(url: str, owner: str, processes: int, threads: int) -> list[Any]:
    """Run ``workers.reserve_until_exhausted`` in ``processes`` children and
    return every reservation they made."""
    results = SPAWN.Queue()
    start = SPAWN.Barrier(processes * threads)
    children = [
        SPAWN.Process(
            target=workers.reserve_until_exhausted,
            args=(url, owner, threads, start, results),
            daemon=True,
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        messages = [results.get(timeout=120) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():  # pragma: no cover - only when a child hangs
                child.kill()
                child.join()
    errors = [text for status, _, text in messages if status != "ok"]
    assert not errors, "a worker failed:\n" + "\n".join(errors)
    assert all(child.exitcode == 0 for child in children)
    return [won for _, _, batch in messages for won in batch]


def test_processes_never_reserve_past_the_daily_limit(
    storage_url: str, shared: Storage, owner: str
) -> None:
    accounts = [
        shared.add(proof_account(owner, n, daily_limit=40, min_wait_time=0))
        for n in range(5)
    ]
    won = run_reservers(storage_url, owner, processes=4, threads=8)

    per_day = Counter((account_id, day) for account_id, day, _ in won)
    # Normally every reservation is on one day. Should the run straddle
    # midnight UTC, the limit holds on each day and the workers only stop
    # when the last day is full.
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
        assert (stored.sent_count, stored.count_day) == (
            40,
            date.fromisoformat(last_day),
        )


def test_processes_respect_the_min_wait(
    storage_url: str, shared: Storage, owner: str
) -> None:
    account = shared.add(proof_account(owner, 0, daily_limit=100, min_wait_time=3600))
    won = run_reservers(storage_url, owner, processes=4, threads=4)
    assert [account_id for account_id, _, _ in won] == [account.id]
    assert shared.get(account.id).sent_count == 1


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
