"""Child processes of the multi-process proofs (test_django_concurrency.py).

Each child sets Django up on the parent's test databases, then runs its
threads through ``workers.run_children`` / ``workers.in_threads`` (the harness
of tests/storage/workers.py): every thread claims through its own
``DjangoStorage`` connection, on the real clock.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from workers import BarrierLike, QueueLike, in_threads, report

Won = tuple[str, str, int]
"""One granted claim: (account id, ISO day, sent_count after it)."""

RUNAWAY = 500
"""Claims one thread may make beyond the limits before it gives up."""


def setup_django(databases: Mapping[str, str]) -> None:
    """Configure Django in this child with the parent's test database names."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailpool_django_settings")
    import django
    from django.conf import settings

    for alias, name in databases.items():
        settings.DATABASES[alias]["NAME"] = name
    django.setup()


def _run(
    databases: Mapping[str, str],
    threads: int,
    start: BarrierLike,
    results: QueueLike,
    work: Callable[[int], object],
) -> None:
    def job() -> list[object]:
        setup_django(databases)
        from django.db import connections

        def in_thread(index: int) -> object:
            try:
                return work(index)
            finally:
                connections.close_all()

        return in_threads(threads, start, in_thread)

    report(results, start, job)


def claim_until_exhausted(
    databases: Mapping[str, str],
    alias: str,
    owner: str,
    limits: int,
    threads: int,
    start: BarrierLike,
    results: QueueLike,
) -> None:
    """Claim (any strategy) and complete at once, like pools sending as fast
    as they can, until no account of ``owner`` has quota left today. Each
    thread's result: its :data:`Won` claims.

    A thread gives up with an AssertionError after more claims than the
    ``limits`` of the owner's accounts add up to (plus a margin), or after
    :data:`RUNAWAY` refusals in a row while quota was left: a storage that
    breaks the limits, or refuses what it should grant, stops the proof
    instead of hanging it."""

    def work(_: int) -> list[Won]:
        from mailpool import Claim, Scope, Strategy
        from mailpool.contrib.django.storage import DjangoStorage

        storage = DjangoStorage(using=alias)
        rng = random.Random()
        won: list[Won] = []
        refused = 0
        while True:
            if len(won) > limits + RUNAWAY:
                raise AssertionError(
                    f"{len(won)} claims; the limits add up to {limits}"
                )
            now = datetime.now(timezone.utc)
            strategy = rng.choice(list(Strategy))
            lease = storage.claim(
                Claim(Scope(owner=owner), now, strategy=strategy, rng=rng)
            )
            if lease is not None:
                refused = 0
                won.append(
                    (lease.account_id, lease.day.isoformat(), lease.account.sent_count)
                )
                storage.complete(lease, datetime.now(timezone.utc))
                continue
            day = datetime.now(timezone.utc).date()
            if not any(a.remaining_on(day) for a in storage.accounts(owner=owner)):
                return won
            refused += 1  # every account busy with another thread's send
            if refused > RUNAWAY:
                raise AssertionError(f"{refused} refusals in a row with quota left")
            time.sleep(0.001)

    _run(databases, threads, start, results, work)


def claim_n_times(
    databases: Mapping[str, str],
    alias: str,
    account_id: str,
    attempts: int,
    complete: bool,
    threads: int,
    start: BarrierLike,
    results: QueueLike,
) -> None:
    """Claim ``account_id`` exactly ``attempts`` times per thread, completing
    each lease (``complete``) or keeping it. Each thread's result: one entry
    per attempt, the :data:`Won` claim or None when refused."""

    def work(_: int) -> list[Won | None]:
        from mailpool import Claim, Scope
        from mailpool.contrib.django.storage import DjangoStorage

        storage = DjangoStorage(using=alias)
        answers: list[Won | None] = []
        for _ in range(attempts):
            now = datetime.now(timezone.utc)
            lease = storage.claim(Claim(Scope(), now, account_id=account_id))
            if lease is None:
                answers.append(None)
                continue
            answers.append(
                (lease.account_id, lease.day.isoformat(), lease.account.sent_count)
            )
            if complete:
                storage.complete(lease, datetime.now(timezone.utc))
        return answers

    _run(databases, threads, start, results, work)
