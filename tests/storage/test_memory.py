"""InMemoryStorage: the contract (threads sharing one object included)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contract import StorageContract

from mailpool import ConfigurationError, InMemoryStorage


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
