"""SimpleStorage: a backend that implements only ``locked_read`` and
``locked_write`` (here a dict and a lock) gets every operation of the
protocol, correct claims included, and passes the whole contract."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import pytest
from contract import Reopen, StorageContract

from mailpool import Account, SimpleStorage, Storage


class Shelf:
    """Where a :class:`DictStorage` keeps its accounts: storage objects on
    one shelf share them, like processes sharing a file or a database."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accounts: dict[str, Account] = {}


class DictStorage(SimpleStorage):
    """The smallest custom backend: a dict behind a lock."""

    def __init__(self, shelf: Shelf) -> None:
        self._shelf = shelf

    @contextlib.contextmanager
    def locked_read(self) -> Iterator[Mapping[str, Account]]:
        with self._shelf.lock:
            yield MappingProxyType(self._shelf.accounts)

    @contextlib.contextmanager
    def locked_write(self) -> Iterator[dict[str, Account]]:
        with self._shelf.lock:
            accounts = dict(self._shelf.accounts)
            yield accounts  # an error in the block leaves the shelf as it was
            self._shelf.accounts = accounts


class TestDictStorage(StorageContract):
    @pytest.fixture
    def shelf(self) -> Shelf:
        return Shelf()

    @pytest.fixture
    def reopen(self, shelf: Shelf) -> Reopen:
        return lambda: DictStorage(shelf)

    @pytest.fixture
    def storage(self, reopen: Reopen) -> Iterator[Storage]:
        storage = reopen()
        yield storage
        storage.close()
