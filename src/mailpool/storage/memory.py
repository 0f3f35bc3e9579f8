"""InMemoryStorage: accounts in a dict, for tests, scripts and single processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from mailpool.errors import ConfigurationError
from mailpool.models import Account
from mailpool.storage._mapping import MappingStorage

__all__ = ["InMemoryStorage"]


class InMemoryStorage(MappingStorage):
    """Accounts in memory, safe to share between the threads of one process.

    Nothing survives the process: use :class:`~mailpool.JSONStorage` or
    :class:`~mailpool.SQLStorage` to keep accounts, or to share them between
    processes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}

    @classmethod
    def from_url(cls, url: str) -> InMemoryStorage:
        """Open ``memory://``.

        :raises ConfigurationError: if the URL has a path or options.
        """
        if url.rstrip("/").lower() != "memory:":
            raise ConfigurationError(
                f"memory storage takes no path or options: use 'memory://', not {url!r}"
            )
        return cls()

    def __repr__(self) -> str:
        return f"<InMemoryStorage: {len(self._accounts)} accounts>"

    @contextmanager
    def _reading(self) -> Iterator[Mapping[str, Account]]:
        with self._lock:
            yield self._accounts

    @contextmanager
    def _writing(self) -> Iterator[dict[str, Account]]:
        with self._lock:
            accounts = dict(self._accounts)
            yield accounts
            self._accounts = accounts

    def close(self) -> None:
        """Nothing to release; kept for the :class:`Storage` protocol."""
