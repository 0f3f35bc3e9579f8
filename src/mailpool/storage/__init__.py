"""Storage backends and :func:`open_storage`, which picks one from a URL.

==========================================  ======================================
URL                                         backend
==========================================  ======================================
``memory://``                               :class:`InMemoryStorage`
``json:///var/lib/app/accounts.json``       :class:`JSONStorage` (absolute path)
``json://accounts.json``                    :class:`JSONStorage` (relative path)
``sqlite:///app.db``                        :class:`SQLStorage` (``mailpool[sql]``)
``postgresql+psycopg://user:pw@host/db``    :class:`SQLStorage`
                                            (``mailpool[postgres]``)
any other SQLAlchemy URL                    :class:`SQLStorage`
==========================================  ======================================
"""

from __future__ import annotations

from collections.abc import Callable

from mailpool.errors import ConfigurationError
from mailpool.storage.base import (
    CANDIDATE_SAMPLE,
    Claim,
    Lease,
    RecordsFailures,
    Scope,
    Storage,
    Strategy,
)
from mailpool.storage.jsonfile import JSONStorage
from mailpool.storage.memory import InMemoryStorage
from mailpool.storage.simple import SimpleStorage
from mailpool.storage.sql import SQLStorage

__all__ = [
    "CANDIDATE_SAMPLE",
    "Claim",
    "InMemoryStorage",
    "JSONStorage",
    "Lease",
    "RecordsFailures",
    "SQLStorage",
    "Scope",
    "SimpleStorage",
    "Storage",
    "Strategy",
    "open_storage",
]

_SCHEMES: dict[str, Callable[[str], Storage]] = {
    "memory": InMemoryStorage.from_url,
    "json": JSONStorage.from_url,
}

_SQL_SCHEMES = (
    "sqlite",
    "postgresql",
    "postgres",
    "mysql",
    "mariadb",
    "mssql",
    "oracle",
)


def open_storage(url: str) -> Storage:
    """Open the storage a URL names (see the table above).

    :raises ConfigurationError: for an unknown scheme, a malformed URL, or a
        backend whose optional dependency is not installed (the message names
        the extra to install).
    :raises StorageError: if the file or database cannot be opened.
    """
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(
            f"{_redact(url)!r} is not a storage URL: use memory://, "
            "json:///path/to/accounts.json, sqlite:///path/to/app.db or "
            "postgresql+psycopg://user:password@host/db"
        )
    opener = _SCHEMES.get(scheme.lower())
    if opener is not None:
        return opener(url)
    if scheme.lower().split("+", 1)[0] in _SQL_SCHEMES:
        return SQLStorage(url)
    known = ", ".join(
        [*(f"{name}://" for name in _SCHEMES), "sqlite://", "postgresql://"]
    )
    raise ConfigurationError(
        f"unknown storage URL scheme {scheme!r}: use one of {known} "
        "(or another SQLAlchemy database URL)"
    )


def _redact(text: str) -> str:
    """``text`` (a string that is not a URL) without a ``user:password@`` secret."""
    credentials, at, host = text.rpartition("@")
    if at and ":" in credentials:
        return f"{credentials.split(':', 1)[0]}:***@{host}"
    return text
