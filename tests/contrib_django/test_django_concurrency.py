"""Real processes sharing one database never over-send through DjangoStorage.

Children are spawned interpreters (django_workers.py) that set Django up on
this session's test databases and claim through their own connections, from
several threads each, on SQLite and PostgreSQL. Pass or fail never depends on
timing: the assertions only count what the storage granted.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import django_workers
import pytest
import workers
from django.conf import settings
from django.db import connections

from mailpool import Account, SMTPSettings
from mailpool.contrib.django.storage import DjangoStorage

ALIASES = settings.STORAGE_ALIASES


def _params() -> list[Any]:
    params = []
    for kind in ("sqlite", "postgresql"):
        alias = ALIASES.get(kind)
        database = pytest.mark.django_db(
            transaction=True, databases=[alias or "default"]
        )
        marks = [pytest.mark.integration, database]
        if alias is None:
            marks.append(pytest.mark.skip(reason="needs MAILPOOL_TEST_POSTGRES_URL"))
        params.append(pytest.param(alias, id=kind, marks=marks))
    return params


@pytest.fixture(params=_params())
def alias(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


@pytest.fixture
def databases(alias: str) -> dict[str, str]:
    """The test database of ``alias`` as the children must open it."""
    return {alias: str(connections[alias].settings_dict["NAME"])}


def proof_account(owner: str, n: int, **fields: Any) -> Account:
    return Account(
        email=f"{owner}-{n}@example.com",
        owner=owner,
        min_wait_time=0,
        smtp=SMTPSettings(host="smtp.example.com", username="u", password="pw"),
        **fields,
    )


def test_processes_never_claim_past_the_daily_limit(
    alias: str, databases: dict[str, str]
) -> None:
    storage = DjangoStorage(using=alias)
    owner = f"proof-{uuid.uuid4().hex[:8]}"
    limit = 25
    accounts = [
        storage.add(proof_account(owner, n, daily_limit=limit)) for n in range(4)
    ]
    batches = workers.run_children(
        django_workers.claim_until_exhausted,
        (databases, alias, owner, limit * len(accounts)),
        processes=4,
        threads=4,
    )
    won = [entry for process in batches for thread in process for entry in thread]
    per_day = Counter((account_id, day) for account_id, day, _ in won)
    last_day = max(day for _, day, _ in won)
    assert all(count <= limit for count in per_day.values())
    for account in accounts:
        assert per_day[(account.id, last_day)] == limit
        counts = sorted(n for a, d, n in won if a == account.id and d == last_day)
        assert counts == list(range(1, limit + 1))  # each unit granted once
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.in_flight) == (limit, 0)


def test_processes_get_every_claim_the_limits_allow(
    alias: str, databases: dict[str, str]
) -> None:
    # Attempts add up to exactly the daily limit, and the send slots never run
    # out: every claim must be granted (none refused while others held locks).
    processes, threads, attempts = 4, 4, 5
    limit = processes * threads * attempts
    storage = DjangoStorage(using=alias)
    account = storage.add(
        proof_account("all", 0, daily_limit=limit, max_in_flight=processes * threads)
    )
    batches = workers.run_children(
        django_workers.claim_n_times,
        (databases, alias, account.id, attempts, True),
        processes=processes,
        threads=threads,
    )
    tries = [entry for process in batches for thread in process for entry in thread]
    assert len(tries) == limit
    assert tries.count(None) == 0, f"{tries.count(None)} allowed claims refused"
    won = [entry for entry in tries if entry is not None]
    if len({day for _, day, _ in won}) == 1:  # not straddling midnight UTC
        assert sorted(n for _, _, n in won) == list(range(1, limit + 1))
        assert storage.get(account.id).sent_count == limit


def test_processes_never_exceed_max_in_flight(
    alias: str, databases: dict[str, str]
) -> None:
    storage = DjangoStorage(using=alias)
    account = storage.add(proof_account("slots", 0, daily_limit=1000, max_in_flight=3))
    batches = workers.run_children(
        django_workers.claim_n_times,
        (databases, alias, account.id, 2, False),  # leases kept, never ended
        processes=3,
        threads=4,
    )
    tries = [entry for process in batches for thread in process for entry in thread]
    granted = [entry for entry in tries if entry is not None]
    assert len(granted) == 3
    stored = storage.get(account.id)
    assert (stored.in_flight, stored.sent_count) == (3, 3)
