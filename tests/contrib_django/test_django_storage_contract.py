"""DjangoStorage passes the shared storage contract, on SQLite and PostgreSQL.

Each test runs on an empty table (``transaction=True``: the rows are really
committed, so the contract's threads see them through their own database
connections, and are flushed afterwards).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contract import Reopen, StorageContract
from django.conf import settings

from mailpool.contrib.django.storage import DjangoStorage

ALIASES = settings.STORAGE_ALIASES
POSTGRES_ALIAS = ALIASES.get("postgresql", "default")
NO_POSTGRES = "needs MAILPOOL_TEST_POSTGRES_URL"


@pytest.mark.django_db(transaction=True, databases=[ALIASES["sqlite"]])
class TestDjangoStorageOnSQLite(StorageContract):
    @pytest.fixture
    def storage(self) -> Iterator[DjangoStorage]:
        storage = DjangoStorage(using=ALIASES["sqlite"])
        yield storage
        storage.close()

    @pytest.fixture
    def reopen(self) -> Reopen:
        return lambda: DjangoStorage(using=ALIASES["sqlite"])


@pytest.mark.integration
@pytest.mark.skipif(
    "postgresql" not in ALIASES, reason="needs MAILPOOL_TEST_POSTGRES_URL"
)
@pytest.mark.django_db(
    transaction=True, databases=[ALIASES.get("postgresql", "default")]
)
class TestDjangoStorageOnPostgreSQL(StorageContract):
    @pytest.fixture
    def storage(self) -> Iterator[DjangoStorage]:
        storage = DjangoStorage(using=ALIASES["postgresql"])
        yield storage
        storage.close()

    @pytest.fixture
    def reopen(self) -> Reopen:
        return lambda: DjangoStorage(using=ALIASES["postgresql"])
