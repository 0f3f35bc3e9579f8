"""Code that runs in child processes for the real-process proofs, and the
harness that starts them.

The proofs (test_concurrency.py here, tests/test_multiprocess_send.py) start
children with ``multiprocessing.get_context("spawn")``: a fresh interpreter
that imports the worker's module by name (the parent's ``sys.path``, which
tests/conftest.py extended, is passed on to spawned children) and calls one of
its top-level functions. Workers open their storage from a URL with
:func:`mailpool.open_storage`, so one harness serves the JSON file, SQLite and
PostgreSQL; :func:`empty_storage_url` gives each test an empty one.

:func:`run_children` starts the children; each one calls its worker as
``worker(*args, threads, start, results)`` and runs ``threads`` threads that
all begin together at the ``start`` barrier (:func:`in_threads`). Workers
report through the ``results`` queue, one message per process (:func:`report`):
``("ok", pid, [each thread's result, ...])`` or ``("error", pid,
traceback_text)``. They never raise, so a failure in a child shows up as a
readable traceback in the parent.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import multiprocessing
import os
import queue
import random
import signal
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mailpool import Claim, JSONStorage, Scope, Storage, open_storage

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureFunctionDefinition
    from _pytest.mark.structures import ParameterSet

__all__ = [
    "POSTGRES_URL",
    "STORAGE_KINDS",
    "BarrierLike",
    "QueueLike",
    "Won",
    "churn_json_file",
    "claim_and_die",
    "claim_and_hold",
    "claim_n_times",
    "claim_until_exhausted",
    "empty_storage_url",
    "in_threads",
    "report",
    "run_children",
    "stopped",
    "storage_params",
    "storage_url_fixture",
]

POSTGRES_URL = os.environ.get("MAILPOOL_TEST_POSTGRES_URL")
STORAGE_KINDS = ("json", "sqlite", "postgresql")
"""The backends that processes can share."""

SPAWN = multiprocessing.get_context("spawn")
START_TIMEOUT = 60.0
"""Seconds a thread waits at the start barrier for all the others."""
CHILDREN_TIMEOUT = 90.0
"""Seconds the parent waits for every child's report (under pytest's 120)."""
LEASE_SECONDS = 15.0
"""The leases of the claim loops: a lease that a failed thread left behind
holds its account for this long only, not for the default five minutes."""
DUMP_SIGNAL = signal.SIGUSR1
"""Makes a child print every thread's stack to its stderr (which pytest
shows): the parent sends it to the children that did not report in time."""
_STOPPED = threading.Event()
"""Set in a child when one of its threads failed: the other threads' loops
stop at once rather than run on (and hide the failure) until they end."""

Won = tuple[str, str, int]
"""One successful claim: (account id, ISO day, sent_count after it)."""

T = TypeVar("T")


class QueueLike(Protocol):
    """What a worker needs of the results queue."""

    def put(self, item: Any, /) -> None: ...


class BarrierLike(Protocol):
    """What a worker needs of the start barrier."""

    def wait(self, timeout: float | None = None) -> int: ...

    def abort(self) -> None: ...


class _Event(Protocol):
    def set(self) -> None: ...


# -- the storages the proofs share (parent side) ------------------------------


def _missing_requirement(kind: str) -> str | None:
    """Why the ``kind`` proofs cannot run here, or None."""
    if kind == "json":
        return None
    try:
        import sqlalchemy  # noqa: F401
    except ImportError:
        return "SQLAlchemy is not installed (mailpool[sql])"
    if kind == "postgresql" and not POSTGRES_URL:
        return (
            "set MAILPOOL_TEST_POSTGRES_URL (and install mailpool[postgres]) "
            "to run the PostgreSQL proofs"
        )
    return None


def storage_params() -> list[ParameterSet]:
    """One ``pytest.param`` per kind in :data:`STORAGE_KINDS`, skipped with
    the reason when it cannot run here.

    pytest is imported by the parent-side helpers only: children never need it.
    """
    import pytest

    params = []
    for kind in STORAGE_KINDS:
        missing = _missing_requirement(kind)
        skip = pytest.mark.skipif(missing is not None, reason=missing or "")
        params.append(pytest.param(kind, id=kind, marks=skip))
    return params


def storage_url_fixture() -> FixtureFunctionDefinition:
    """A ``storage_url`` fixture, parametrized over :func:`storage_params`,
    yielding :func:`empty_storage_url`. Use it in a test module with
    ``storage_url = workers.storage_url_fixture()``."""
    import pytest

    @pytest.fixture(params=storage_params())
    def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
        with empty_storage_url(request.param, tmp_path) as url:
            yield url

    return storage_url


@contextlib.contextmanager
def empty_storage_url(kind: str, folder: Path) -> Iterator[str]:
    """The URL of an empty storage of ``kind`` that processes can share.

    JSON and SQLite: a new file in ``folder``. PostgreSQL: a fresh schema in
    the ``MAILPOOL_TEST_POSTGRES_URL`` database (the URL sets ``search_path``,
    like the ``postgres`` fixture of test_sql.py does with engine options),
    dropped at exit; the database's own tables are never touched.
    """
    if kind == "json":
        yield f"json://{folder / 'accounts.json'}"
        return
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'accounts.db'}"
        return
    assert kind == "postgresql", kind
    assert POSTGRES_URL is not None
    import sqlalchemy as sa

    schema = f"mailpool_proof_{uuid.uuid4().hex[:12]}"
    url = sa.make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-c search_path={schema}"}
    )
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


# -- starting children (parent side) ------------------------------------------


def run_children(
    worker: Callable[..., None],
    args: tuple[Any, ...],
    *,
    processes: int,
    threads: int,
) -> list[list[Any]]:
    """Run ``worker(*args, threads, start, results)`` in ``processes`` spawned
    children whose threads all start together.

    :returns: every thread's result, one list per process (in the order the
        processes reported).
    :raises AssertionError: with the tracebacks, when a child failed, did not
        report within :data:`CHILDREN_TIMEOUT` or exited with an error.
    """
    results = SPAWN.Queue()
    start = SPAWN.Barrier(processes * threads)
    children = [
        SPAWN.Process(target=worker, args=(*args, threads, start, results), daemon=True)
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    deadline = time.monotonic() + CHILDREN_TIMEOUT
    messages = []
    try:
        for _ in children:
            try:
                messages.append(
                    results.get(timeout=max(deadline - time.monotonic(), 0.1))
                )
            except queue.Empty:
                _dump_stacks(children)
                raise AssertionError(
                    f"only {len(messages)} of {processes} children reported "
                    f"within {CHILDREN_TIMEOUT:g} s (their threads' stacks are "
                    "in the captured stderr)"
                ) from None
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():  # pragma: no cover - only when a child hangs
                child.kill()
                child.join()
    errors = [text for status, _, text in messages if status != "ok"]
    assert not errors, "a worker failed:\n" + "\n".join(errors)
    assert [child.exitcode for child in children] == [0] * processes
    return [payload for _, _, payload in messages]


def _dump_stacks(children: list[Any]) -> None:  # pragma: no cover - on hangs
    """Have every child still running print its threads' stacks."""
    for child in children:
        if child.is_alive() and child.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(child.pid, DUMP_SIGNAL)
    time.sleep(2.0)


# -- in the children ----------------------------------------------------------


def stopped() -> bool:
    """Whether another thread of this child failed (see :func:`in_threads`):
    a worker's loop should end."""
    return _STOPPED.is_set()


def report(results: QueueLike, start: BarrierLike, job: Callable[[], object]) -> None:
    """Run ``job`` and put ``("ok", pid, its result)`` on ``results``, or
    ``("error", pid, traceback)`` after breaking the ``start`` barrier (so
    that the other children stop waiting). Never raises."""
    pid = os.getpid()
    faulthandler.register(DUMP_SIGNAL, all_threads=True)
    try:
        payload = job()
    except BaseException:
        start.abort()
        results.put(("error", pid, traceback.format_exc()))
    else:
        results.put(("ok", pid, payload))


def in_threads(threads: int, start: BarrierLike, work: Callable[[int], T]) -> list[T]:
    """Run ``work(index)`` in ``threads`` threads that wait for each other (and
    for the other processes' threads) at ``start``.

    A thread that raises makes :func:`stopped` true for the others.

    :returns: the threads' results, by index.
    :raises RuntimeError: with every traceback, when a thread raised.
    """
    done: dict[int, T] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        try:
            start.wait(timeout=START_TIMEOUT)
            result = work(index)
        except BaseException:
            _STOPPED.set()
            with lock:
                errors.append(traceback.format_exc())
        else:
            with lock:
                done[index] = result

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError("a thread failed:\n" + "\n".join(errors))
    return [done[index] for index in range(threads)]


def _on_storage(
    url: str,
    threads: int,
    start: BarrierLike,
    results: QueueLike,
    work: Callable[[Storage, int], object],
) -> None:
    """Open the storage at ``url`` once for the process, run ``work(storage,
    thread index)`` in ``threads`` threads, and :func:`report`."""

    def job() -> list[object]:
        with contextlib.closing(open_storage(url)) as storage:
            return in_threads(threads, start, functools.partial(work, storage))

    report(results, start, job)


def _won(storage: Storage, claim: Claim, *, complete: bool = True) -> Won | None:
    """Claim, and complete the lease at once on the real clock (a delivery
    that took no time) unless told not to."""
    lease = storage.claim(claim)
    if lease is None:
        return None
    if complete:
        storage.complete(lease, datetime.now(timezone.utc))
    return (lease.account_id, lease.day.isoformat(), lease.account.sent_count)


BUSY_LIMIT = 200_000
"""Claims a thread may find every account busy (in flight) before
:func:`claim_until_exhausted` gives up on leases that never end."""


def claim_until_exhausted(
    url: str, owner: str, threads: int, start: BarrierLike, results: QueueLike
) -> None:
    """Mimic pools sending as fast as they can, in ``threads`` threads.

    Each thread claims in the owner's accounts on the real clock (leases of
    :data:`LEASE_SECONDS`) and completes each lease at once, until a claim
    finds no account while none is busy (an unexpired lease in flight), twice
    in a row (with a fresh clock reading, so that one stale reading never
    ends a thread early): then the daily limits or the minimum waits, not the
    send slots, refuse.
    Each thread's result is its list of :data:`Won` claims.

    A storage that breaks the limits would keep this loop going until the
    pytest timeout, so a thread stops with an AssertionError as soon as it won
    more claims on one day than the owner's daily limits add up to, or found
    everything busy :data:`BUSY_LIMIT` times.
    """
    scope = Scope(owner=owner)

    def run(storage: Storage, _: int) -> list[Won]:
        limits = sum(account.daily_limit for account in storage.accounts(owner=owner))
        rng = random.Random()
        won: list[Won] = []
        won_per_day: Counter[str] = Counter()
        busy = 0
        empty_in_a_row = 0
        while empty_in_a_row < 2 and not stopped():
            if max(won_per_day.values(), default=0) > limits or busy > BUSY_LIMIT:
                raise AssertionError(
                    f"accounts are still eligible after this thread won "
                    f"{dict(won_per_day)} claims (per day) and found them all "
                    f"busy {busy} times; the daily limits of owner {owner!r} add "
                    f"up to {limits}"
                )
            now = datetime.now(timezone.utc)
            claim = Claim(scope=scope, now=now, lease_seconds=LEASE_SECONDS, rng=rng)
            claimed = _won(storage, claim)
            if claimed is not None:
                empty_in_a_row = 0
                won.append(claimed)
                won_per_day[claimed[1]] += 1
                continue
            later = datetime.now(timezone.utc)
            if any(a.busy_left(later) > 0 for a in storage.accounts(owner=owner)):
                busy += 1
                empty_in_a_row = 0
                time.sleep(0.001)  # a pool would wait for a slot too
            else:
                empty_in_a_row += 1
        return won

    _on_storage(url, threads, start, results, run)


def claim_n_times(
    url: str,
    owner: str,
    attempts: int,
    threads: int,
    start: BarrierLike,
    results: QueueLike,
) -> None:
    """Each of ``threads`` threads claims in the owner's accounts exactly
    ``attempts`` times on the real clock, completing each lease, whatever the
    answers. Each thread's result is one entry per attempt: the :data:`Won`
    claim, or None when it was refused."""
    scope = Scope(owner=owner)

    def run(storage: Storage, _: int) -> list[Won | None]:
        rng = random.Random()
        return [
            _won(storage, Claim(scope=scope, now=datetime.now(timezone.utc), rng=rng))
            for _ in range(attempts)
        ]

    _on_storage(url, threads, start, results, run)


def claim_and_hold(
    url: str,
    owner: str,
    attempts: int,
    threads: int,
    start: BarrierLike,
    results: QueueLike,
) -> None:
    """Like :func:`claim_n_times`, but the leases are never ended (sends that
    stay in flight): each thread's result is one entry per attempt."""
    scope = Scope(owner=owner)

    def run(storage: Storage, _: int) -> list[Won | None]:
        rng = random.Random()
        return [
            _won(
                storage,
                Claim(scope=scope, now=datetime.now(timezone.utc), rng=rng),
                complete=False,
            )
            for _ in range(attempts)
        ]

    _on_storage(url, threads, start, results, run)


def claim_and_die(url: str, account_id: str, moment: str, lease_seconds: float) -> None:
    """Claim ``account_id`` at ``moment`` (ISO) and die at once by SIGKILL:
    a worker that never ends its lease."""
    storage = open_storage(url)
    now = datetime.fromisoformat(moment)
    claim = Claim(
        scope=Scope(), now=now, lease_seconds=lease_seconds, account_id=account_id
    )
    lease = storage.claim(claim)
    if lease is None:
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)


def churn_json_file(path: str, ready: _Event) -> None:
    """Rewrite the JSON file forever, until the parent kills this process.

    Cycles through the kinds of writes the library does: settings updates
    that change the file's size, claim + release, and a reset. ``ready`` is
    set once a few writes have gone through.
    """
    storage = JSONStorage(path)
    accounts = storage.accounts()
    rng = random.Random()
    writes = 0
    while True:
        account = rng.choice(accounts)
        kind = writes % 4
        if kind in (0, 1):
            name = f"Churn {writes} " + "x" * rng.randrange(80)
            storage.update(account.replace(sender_name=name))
        elif kind == 2:
            now = datetime.now(timezone.utc)
            lease = storage.claim(Claim(scope=Scope(), now=now, account_id=account.id))
            if lease is not None:
                storage.release(lease, now)
        else:
            storage.reset_daily_counts()
        writes += 1
        if writes == 8:
            ready.set()
