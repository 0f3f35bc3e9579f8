"""InMemoryStorage: the contract, plus sharing one object between threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from contract import NOW, StorageContract, make_account

from mailpool import ConfigurationError, InMemoryStorage, Reservation, Scope


class TestInMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self) -> Iterator[InMemoryStorage]:
        storage = InMemoryStorage()
        yield storage
        storage.close()


def test_from_url_accepts_only_memory() -> None:
    assert isinstance(InMemoryStorage.from_url("memory://"), InMemoryStorage)
    with pytest.raises(ConfigurationError, match="memory://"):
        InMemoryStorage.from_url("memory://somewhere")


def test_threads_never_reserve_past_the_daily_limit() -> None:
    storage = InMemoryStorage()
    account = storage.add(make_account(daily_limit=50))
    won: list[Reservation] = []
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        for _ in range(20):
            reservation = storage.reserve(account.id, NOW)
            if reservation is not None:
                won.append(reservation)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 50
    assert sorted(r.account.sent_count for r in won) == list(range(1, 51))
    assert storage.get(account.id).sent_count == 50
    assert storage.eligible(Scope(), NOW + timedelta(seconds=1)) == []
