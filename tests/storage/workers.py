"""Code that runs in child processes for test_concurrency.py.

The tests start children with ``multiprocessing.get_context("spawn")``: a fresh
interpreter that imports this module by name (the parent's ``sys.path``, which
tests/conftest.py extended, is passed on to spawned children) and calls
one of the top-level functions below. The workers open their storage from a
URL with :func:`mailpool.open_storage`, so one harness serves the JSON
file, SQLite and PostgreSQL.

Workers report through a ``multiprocessing`` queue, one message per process:
``("ok", pid, payload)`` or ``("error", pid, traceback_text)``. They never
raise, so a failure in a child shows up as a readable traceback in the parent.
"""

from __future__ import annotations

import os
import random
import threading
import traceback
from datetime import datetime, timezone
from typing import Any, Protocol

from mailpool import JSONStorage, Scope, open_storage

__all__ = ["churn_json_file", "reserve_until_exhausted"]

Won = tuple[str, str, int]
"""One successful reservation: (account id, ISO day, sent_count after it)."""


class _Queue(Protocol):
    def put(self, item: Any, /) -> None: ...


class _Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


class _Event(Protocol):
    def set(self) -> None: ...


def reserve_until_exhausted(
    url: str, owner: str, threads: int, start: _Barrier, results: _Queue
) -> None:
    """Mimic pools sending as fast as they can, in ``threads`` threads.

    Each thread loops like :meth:`AccountPool.send` does, on the real clock:
    ``eligible`` -> pick one at random -> ``reserve``, until ``eligible`` is
    empty (checked twice, with a fresh clock reading, so that one stale
    reading never ends a thread early). All threads of all processes start
    together at ``start``. Puts ``("ok", pid, [Won, ...])`` on ``results``.
    """
    pid = os.getpid()
    try:
        storage = open_storage(url)
        won: list[Won] = []
        errors: list[str] = []
        lock = threading.Lock()
        scope = Scope(owner=owner)

        def run() -> None:
            rng = random.Random()
            empty_in_a_row = 0
            try:
                start.wait(timeout=60)
                while empty_in_a_row < 2:
                    now = datetime.now(timezone.utc)
                    candidates = storage.eligible(scope, now)
                    if not candidates:
                        empty_in_a_row += 1
                        continue
                    empty_in_a_row = 0
                    reservation = storage.reserve(rng.choice(candidates).id, now)
                    if reservation is not None:
                        with lock:
                            won.append(
                                (
                                    reservation.account_id,
                                    reservation.day.isoformat(),
                                    reservation.account.sent_count,
                                )
                            )
            except BaseException:
                with lock:
                    errors.append(traceback.format_exc())

        workers = [threading.Thread(target=run) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        storage.close()
        if errors:
            results.put(("error", pid, "\n".join(errors)))
        else:
            results.put(("ok", pid, won))
    except BaseException:
        results.put(("error", pid, traceback.format_exc()))


def churn_json_file(path: str, ready: _Event) -> None:
    """Rewrite the JSON file forever, until the parent kills this process.

    Cycles through the kinds of writes the library does: settings updates
    that change the file's size, reserve + release, and a reset. ``ready`` is
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
            reservation = storage.reserve(account.id, datetime.now(timezone.utc))
            if reservation is not None:
                storage.release(reservation)
        else:
            storage.reset_daily_counts()
        writes += 1
        if writes == 8:
            ready.set()
