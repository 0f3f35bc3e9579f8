"""SQLStorage: the contract on SQLite and PostgreSQL, and what only SQL has
(lazy SQLAlchemy, redacted URLs, migrations, bulk imports, claims that are one
indexed statement, PostgreSQL's SKIP LOCKED, races).

PostgreSQL tests need ``MAILPOOL_TEST_POSTGRES_URL``
(e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/mailpool_test``); each test
works in a fresh schema that is dropped afterwards, so the database's own
tables are never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import random
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from contract import (
    DAY,
    NOW,
    Reopen,
    StorageContract,
    claim,
    claim_in_threads,
    make_account,
    seconds,
)

from mailpool.errors import ConfigurationError, StorageError
from mailpool.models import Failure, FailureKind, OAuth2Credentials, SMTPSettings
from mailpool.storage import (
    Lease,
    Scope,
    SQLStorage,
    Storage,
    Strategy,
    open_storage,
)
from mailpool.storage.sql import _Shape

POSTGRES_URL = os.environ.get("MAILPOOL_TEST_POSTGRES_URL")
NO_POSTGRES = (
    "MAILPOOL_TEST_POSTGRES_URL is not set: point it at a PostgreSQL database "
    "(postgresql+psycopg://user@host:port/db) to run the PostgreSQL tests"
)

OpenStorage = Callable[..., SQLStorage]


def _sqlite_url(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mailpool.db'}"


@pytest.fixture
def postgres() -> Iterator[tuple[str, dict[str, Any]]]:
    """A PostgreSQL URL and engine options that confine it to a fresh schema."""
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    schema = f"mailpool_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield POSTGRES_URL, {"connect_args": {"options": f"-c search_path={schema}"}}
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _opener(url: str, options: dict[str, Any]) -> Iterator[OpenStorage]:
    opened: list[SQLStorage] = []

    def open_(**kwargs: Any) -> SQLStorage:
        storage = SQLStorage(url, engine_options=options or None, **kwargs)
        opened.append(storage)
        return storage

    yield open_
    for storage in opened:
        storage.close()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def open_sql(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStorage]:
    """Opens SQLStorage objects on one empty database (SQLite or PostgreSQL);
    closes them at the end. Several objects act like several processes."""
    if request.param == "sqlite":
        yield from _opener(_sqlite_url(tmp_path), {})
    else:
        url, options = request.getfixturevalue("postgres")
        yield from _opener(url, options)


class TestSQLiteStorage(StorageContract):
    @pytest.fixture
    def reopen(self, tmp_path: Path) -> Reopen:
        return functools.partial(SQLStorage, _sqlite_url(tmp_path))

    @pytest.fixture
    def storage(self, reopen: Reopen) -> Iterator[Storage]:
        storage = reopen()
        yield storage
        storage.close()


class TestSQLiteInMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self) -> Iterator[SQLStorage]:
        storage = SQLStorage("sqlite://")
        yield storage
        storage.close()


@pytest.mark.integration
class TestPostgresStorage(StorageContract):
    @pytest.fixture
    def reopen(self, postgres: tuple[str, dict[str, Any]]) -> Reopen:
        url, options = postgres
        return functools.partial(SQLStorage, url, engine_options=options)

    @pytest.fixture
    def storage(self, reopen: Reopen) -> Iterator[Storage]:
        storage = reopen()
        yield storage
        storage.close()


# -- optional dependency, URLs, secrets ---------------------------------------


def test_importing_mailpool_does_not_need_sqlalchemy() -> None:
    code = (
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "import mailpool, mailpool.storage.sql\n"
        "from mailpool import ConfigurationError, open_storage\n"
        "try:\n"
        "    open_storage('sqlite:///never-created.db')\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == (
        "SQLStorage needs SQLAlchemy: pip install 'mailpool[sql]'"
    )


def test_missing_sqlalchemy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'mailpool\[sql\]'"):
        SQLStorage("sqlite:///never-created.db")


def test_missing_postgres_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigurationError) as caught:
        SQLStorage("postgresql+psycopg://mailer:hunter2@db.example.com/mail")
    assert "pip install 'mailpool[postgres]'" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://mailer:hunter2@db.example.com:port/mail",
        "this is no url hunter2",
        "nosuchdatabase://mailer:hunter2@db.example.com/mail",
        "postgresql+psycopg://mailer:p@hunter2@db.example.com/mail",
    ],
)
def test_malformed_or_unknown_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SQLStorage(url)
    assert "hunter2" not in str(caught.value)


def test_a_bare_postgres_url_uses_psycopg_3() -> None:
    storage = SQLStorage("postgres://mailer:hunter2@127.0.0.1:1/mail")
    assert storage.engine.url.drivername == "postgresql+psycopg"
    storage.close()


def test_password_is_in_no_repr_error_or_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Nothing listens on port 1: the first query fails to connect.
    storage = open_storage(
        "postgresql+psycopg://mailer:hunter2@127.0.0.1:1/mail?connect_timeout=2"
    )
    assert isinstance(storage, SQLStorage)
    assert "hunter2" not in repr(storage)
    assert "hunter2" not in str(storage.engine.url)
    with pytest.raises(StorageError) as caught:
        storage.accounts()
    error = caught.value
    assert (
        error.location
        == "postgresql+psycopg://mailer:***@127.0.0.1:1/mail?connect_timeout=2"
    )
    assert error.__cause__ is not None
    assert "hunter2" not in "".join(traceback.format_exception(error))
    assert "hunter2" not in caplog.text
    storage.close()


def test_driver_errors_do_not_show_statement_parameters(tmp_path: Path) -> None:
    storage = SQLStorage(_sqlite_url(tmp_path))
    storage.add(make_account("first@example.com"))
    with storage.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE mailpool_account_tags"))
        conn.execute(sa.text("DROP TABLE mailpool_accounts"))
    secret = make_account(
        "second@example.com",
        smtp=SMTPSettings(host="smtp.example.com", username="u", password="s3cr3t"),
    )
    with pytest.raises(StorageError) as caught:
        storage.add(secret)
    assert "no such table" in str(caught.value)
    assert "s3cr3t" not in "".join(traceback.format_exception(caught.value))
    storage.close()


def test_an_engine_can_be_passed_in_and_is_not_disposed(tmp_path: Path) -> None:
    engine = sa.create_engine(_sqlite_url(tmp_path))
    with pytest.raises(ConfigurationError, match="engine_options"):
        SQLStorage(engine, engine_options={"pool_size": 2})
    storage = SQLStorage(engine)
    account = storage.add(make_account())
    storage.close()
    with engine.connect() as conn:  # still usable
        assert conn.execute(sa.text("SELECT id FROM mailpool_accounts")).scalar() == (
            account.id
        )
    assert SQLStorage(engine).get(account.id) == account
    engine.dispose()


# -- tables, migrations --------------------------------------------------------


def test_metadata_describes_the_tables_for_migrations() -> None:
    metadata = SQLStorage.metadata
    assert set(metadata.tables) == {"mailpool_accounts", "mailpool_account_tags"}
    # The DDL recipe of docs/storage.md.
    statements: list[str] = []

    def dump(sql: Any, *args: Any, **kwargs: Any) -> None:
        statements.append(str(sql.compile(dialect=engine.dialect)))

    engine = sa.create_mock_engine("postgresql+psycopg://", dump)
    metadata.create_all(engine, checkfirst=False)
    ddl = "\n".join(statements)
    assert "CREATE TABLE mailpool_accounts" in ddl
    assert "CREATE TABLE mailpool_account_tags" in ddl
    assert 'email_key VARCHAR(512) COLLATE "C" NOT NULL' in ddl
    for index in (
        "ix_mailpool_accounts_random ON mailpool_accounts (status, rank)",
        "ix_mailpool_accounts_owner_turn ON mailpool_accounts "
        "(owner, status, lease_until, id)",
        "ix_mailpool_account_tags_usage ON mailpool_account_tags "
        "(tag, count_until, sent_count, rank)",
    ):
        assert f"CREATE INDEX {index}" in ddl


def test_tables_are_created_on_first_use(open_sql: OpenStorage) -> None:
    storage = open_sql()
    assert not sa.inspect(storage.engine).has_table("mailpool_accounts")
    assert storage.accounts() == []
    inspector = sa.inspect(storage.engine)
    assert inspector.has_table("mailpool_accounts")
    assert inspector.has_table("mailpool_account_tags")
    # A second storage (another process) finds them and shares the data.
    account = storage.add(make_account())
    assert open_sql().get(account.id) == account


def _use_together(storages: list[SQLStorage]) -> list[StorageError]:
    """Call accounts() on every storage at the same moment, one thread each."""
    failures: list[StorageError] = []
    start = threading.Barrier(len(storages))

    def first_use(storage: SQLStorage) -> None:
        start.wait()
        try:
            storage.accounts()
        except StorageError as exc:  # pragma: no cover - the bug
            failures.append(exc)

    workers = [threading.Thread(target=first_use, args=(s,)) for s in storages]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return failures


def test_processes_opening_a_new_sqlite_file_at_once_all_succeed(
    tmp_path: Path,
) -> None:
    # Switching a file to WAL at the same moment fails at once ("database is
    # locked", no busy wait) in all but one connection: SQLStorage retries.
    for round_ in range(10):
        storages = [SQLStorage(_sqlite_url(tmp_path / str(round_))) for _ in range(8)]
        failures = _use_together(storages)
        with storages[0].engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        for storage in storages:
            storage.close()
        assert failures == []
        assert mode == "wal"


def test_create_tables_false_reports_missing_tables(open_sql: OpenStorage) -> None:
    storage = open_sql(create_tables=False)
    with pytest.raises(StorageError, match="missing") as caught:
        storage.accounts()
    assert "mailpool_accounts" in str(caught.value)
    assert "create_tables=True" in str(caught.value)
    assert not sa.inspect(storage.engine).has_table("mailpool_accounts")
    # Once migrations (here: metadata.create_all) ran, it works.
    SQLStorage.metadata.create_all(storage.engine)
    account = open_sql(create_tables=False).add(make_account())
    assert open_sql(create_tables=False).get(account.id) == account


@pytest.mark.parametrize("create_tables", [True, False])
def test_tables_of_an_earlier_version_are_refused_with_the_columns_they_lack(
    open_sql: OpenStorage, create_tables: bool
) -> None:
    old = open_sql()
    account = old.add(make_account())
    with old.engine.begin() as conn:  # as a table of 0.1 would be
        for column in ("paused_until", "last_error"):
            conn.execute(sa.text(f"ALTER TABLE mailpool_accounts DROP COLUMN {column}"))
    storage = open_sql(create_tables=create_tables)
    with pytest.raises(StorageError) as caught:
        storage.get(account.id)
    message = str(caught.value)
    assert "mailpool_accounts" in message
    assert "paused_until, last_error" in message
    assert "Upgrading" in message
    with pytest.raises(StorageError):
        storage.claim(claim())
    columns = {
        c["name"] for c in sa.inspect(old.engine).get_columns("mailpool_accounts")
    }
    assert "paused_until" not in columns  # nothing was changed


def test_an_old_accounts_table_is_refused_even_when_the_tags_table_is_missing(
    open_sql: OpenStorage,
) -> None:
    old = open_sql()
    old.add(make_account())
    with old.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE mailpool_account_tags"))
        conn.execute(sa.text("ALTER TABLE mailpool_accounts DROP COLUMN pause_kind"))
    with pytest.raises(StorageError, match=r"lacks the column\(s\) pause_kind"):
        open_sql().accounts()


def test_read_modify_writes_lose_nothing_on_a_sqlite_engine_passed_in(
    tmp_path: Path,
) -> None:
    # pysqlite begins transactions its own way on an engine mailpool did not
    # configure: the row must still be locked before it is read.
    engine = sa.create_engine(_sqlite_url(tmp_path), connect_args={"timeout": 30})
    storage = SQLStorage(engine)
    account = storage.add(make_account())
    failure = Failure(FailureKind.TRANSIENT, "451 4.3.0", NOW, max_failures=0)

    def record(_: int) -> None:
        for _ in range(10):
            storage.record_failure(account.id, failure)
            storage.update(storage.get(account.id).replace(sender_name="x"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(record, range(8)))
    assert storage.get(account.id).consecutive_failures == 80
    engine.dispose()


@pytest.mark.parametrize(
    "scope", [Scope(), Scope(owner="acme"), Scope(tag="spring")], ids=repr
)
@pytest.mark.parametrize("exclude", [frozenset(), frozenset({"tried"})])
def test_the_postgresql_claim_statements_stay_short_enough_for_psycopgs_cache(
    scope: Scope, exclude: frozenset[str]
) -> None:
    # psycopg converts (and caches) a query of up to 4096 bytes once per
    # connection, a longer one at every execution. No server is needed to
    # compile them.
    storage = SQLStorage("postgresql+psycopg://mailpool@localhost/mailpool")
    shape = _Shape.of(claim(scope, exclude=exclude))
    for strategy in Strategy:
        for lock in ("choose", "skip", "wait"):
            statement = storage._claim_statement(
                dataclasses.replace(shape, strategy=strategy), lock
            )
            sql = str(statement.compile(dialect=storage.engine.dialect))
            assert len(sql.encode()) <= 4096, (strategy, lock, len(sql))
    storage.close()


def test_owner_and_tag_longer_than_the_columns_are_refused(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    with pytest.raises(ConfigurationError, match="255"):
        storage.add(make_account(owner="o" * 256))
    with pytest.raises(ConfigurationError, match="255"):
        storage.add(make_account(tags={"t" * 256}))
    assert storage.accounts() == []


# -- bulk imports ----------------------------------------------------------------


def _count(storage: SQLStorage, table: str) -> int:
    with storage.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_add_many_takes_twenty_thousand_accounts_at_once(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    batch = [
        make_account(
            f"user{n:05d}@example.com",
            owner=f"tenant-{n % 10}",
            tags={f"t{n % 50}"},
            daily_limit=1000,
        )
        for n in range(20_000)
    ]
    assert storage.add_many(batch) == 20_000
    assert _count(storage, "mailpool_accounts") == 20_000
    assert _count(storage, "mailpool_account_tags") == 20_000
    assert storage.get(batch[12_345].id) == batch[12_345]
    lease = storage.claim(claim(Scope(owner="tenant-3", tag="t13")))
    assert lease is not None
    assert lease.account.owner == "tenant-3"
    assert lease.account.tags == {"t13"}
    # A duplicate at the very end of a batch of several chunks: nothing of the
    # batch stays.
    more = [make_account(f"more{n:05d}@example.com", tags={"m"}) for n in range(12_000)]
    with pytest.raises(ConfigurationError, match="already uses"):
        storage.add_many([*more, make_account("USER00042@example.com")])
    with pytest.raises(ConfigurationError, match="exists"):
        storage.add_many([*more, make_account("new@example.com", id=batch[7].id)])
    assert _count(storage, "mailpool_accounts") == 20_000
    assert _count(storage, "mailpool_account_tags") == 20_000
    assert storage.add_many(more) == 12_000


def test_a_duplicate_in_a_bulk_import_shows_no_secret(open_sql: OpenStorage) -> None:
    storage = open_sql()
    storage.add(make_account("taken@example.com"))
    secret = make_account(
        "TAKEN@example.com",
        smtp=SMTPSettings(host="smtp.example.com", username="u", password="s3cr3t"),
    )
    with pytest.raises(ConfigurationError) as caught:
        storage.add_many([make_account("fine@example.com"), secret])
    assert "s3cr3t" not in "".join(traceback.format_exception(caught.value))


# -- the claim is one indexed statement ---------------------------------------


@contextlib.contextmanager
def _statements(storage: SQLStorage) -> Iterator[list[tuple[str, Any]]]:
    """Collects the statements the block sends to the database (as seen by
    ``before_cursor_execute``), each with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        seen.append((" ".join(statement.split()), parameters))

    sa.event.listen(storage.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(storage.engine, "before_cursor_execute", record)


def _writes(seen: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The statements of ``seen`` that are not transaction control."""
    return [
        (sql, parameters)
        for sql, parameters in seen
        if not sql.upper().startswith(("BEGIN", "COMMIT"))
    ]


def _values(parameters: Any) -> list[Any]:
    if isinstance(parameters, dict):
        return list(parameters.values())
    return list(parameters or ())


def test_a_claim_is_one_conditional_update(open_sql: OpenStorage) -> None:
    # Only one statement that checks and counts at once keeps the limit under
    # concurrency: a SELECT of the count followed by an UPDATE (or an UPDATE
    # writing back a count computed in Python) lets two workers take one unit.
    storage = open_sql()
    postgres = storage.engine.dialect.name == "postgresql"
    account = storage.add(
        make_account(daily_limit=38, sent_count=37, count_day=DAY, tags={"t"})
    )
    for scope in (Scope(), Scope(tag="t")):
        for strategy in Strategy:
            with _statements(storage) as seen:
                lease = storage.claim(claim(scope, strategy=strategy))
            assert lease is not None and lease.account.tags == {"t"}
            storage.release(lease, NOW)
            writes = _writes(seen)
            first, parameters = writes[0]
            if postgres:
                # The account row and its tag rows in one statement.
                assert len(writes) == 1, writes
                assert first.startswith("WITH claimed AS (UPDATE mailpool_accounts")
                assert "SKIP LOCKED" in first
            else:
                assert first.startswith("UPDATE mailpool_accounts SET")
                assert " RETURNING " in first
                assert [sql.split()[:2] for sql, _ in writes[1:]] == [
                    ["UPDATE", "mailpool_account_tags"]
                ]
            assert "daily_limit" in first  # the limit is checked by the UPDATE
            assert "sent_count +" in first  # and counted by the database
            assert not {37, 38} & set(_values(parameters))  # not read, then written
    # Refused: the one UPDATE (then, on PostgreSQL, a read to tell "nothing
    # allowed" from "all locked by other claims"), nothing else.
    assert storage.claim(claim()) is not None
    with _statements(storage) as seen:
        assert storage.claim(claim(now=NOW + timedelta(seconds=1))) is None
    refused = [sql for sql, _ in _writes(seen)]
    assert "UPDATE mailpool_accounts" in refused[0]
    assert all(sql.startswith("SELECT") for sql in refused[1:]), refused
    assert storage.get(account.id).sent_count == 38


def test_complete_and_release_are_one_update_each(open_sql: OpenStorage) -> None:
    storage = open_sql()
    postgres = storage.engine.dialect.name == "postgresql"
    storage.add(make_account(max_in_flight=2, tags={"t"}))
    first, second = storage.claim(claim()), storage.claim(claim())
    assert first is not None and second is not None
    with _statements(storage) as seen:
        storage.complete(first, NOW)
    assert [sql.split()[:2] for sql, _ in _writes(seen)] == [
        ["UPDATE", "mailpool_accounts"]
    ]
    with _statements(storage) as seen:
        storage.release(second, NOW)
    # The count given back is copied to the tag rows: in the same statement
    # on PostgreSQL.
    assert len(_writes(seen)) == (1 if postgres else 2)


def _plan(storage: SQLStorage, statement: str, parameters: Any) -> list[str]:
    """The database's plan for ``statement`` (not executed)."""
    with storage.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if conn.dialect.name == "postgresql":
                cursor.execute("EXPLAIN " + statement, parameters)
                return [row[0] for row in cursor.fetchall()]
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            return [row[-1] for row in cursor.fetchall()]
        finally:
            cursor.close()


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize(
    ("scope", "index"),
    [
        (Scope(), "ix_mailpool_accounts_{}"),
        (Scope(owner="tenant-3"), "ix_mailpool_accounts_owner_{}"),
        (Scope(tag="t7"), "ix_mailpool_account_tags_{}"),
        (Scope(owner="tenant-3", tag="t13"), "ix_mailpool_account_tags_{}"),
    ],
    ids=["all", "owner", "tag", "owner+tag"],
)
def test_a_claim_walks_an_index_and_scans_no_table(
    open_sql: OpenStorage, strategy: Strategy, scope: Scope, index: str
) -> None:
    storage = open_sql()
    storage.add_many(
        make_account(
            f"user{n:04d}@example.com",
            owner=f"tenant-{n % 10}",
            tags={f"t{n % 20}"},
            status="active" if n % 9 else "inactive",
        )
        for n in range(5_000)
    )
    with storage.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    with _statements(storage) as seen:
        assert storage.claim(claim(scope, strategy=strategy)) is not None
    statement, parameters = _writes(seen)[0]
    plan = "\n".join(_plan(storage, statement, parameters))
    name = {
        Strategy.RANDOM: "random",
        Strategy.ROUND_ROBIN: "turn",
        Strategy.LEAST_USED: "usage",
    }[strategy]
    assert index.format(name) in plan, plan
    if storage.engine.dialect.name == "postgresql":
        assert "Seq Scan" not in plan, plan
    else:
        # SQLite says SCAN for a walk through a whole table or index (and
        # for reading the rows of a subquery, which is fine).
        tables = ("c", "chosen", "mailpool_accounts", "mailpool_account_tags")
        scans = [line.split() for line in plan.splitlines()]
        assert not [s for s in scans if s[0] == "SCAN" and s[1] in tables], plan


def test_a_claim_gives_the_row_a_new_rank_and_copies_it_to_the_tags(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    account = storage.add(make_account(tags={"a", "b"}, max_in_flight=5))
    storage.add(make_account("other@example.com", tags={"a"}))

    def ranks() -> set[float]:
        with storage.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT rank FROM mailpool_accounts WHERE id = :id UNION "
                    "SELECT rank FROM mailpool_account_tags WHERE account_id = :id"
                ),
                {"id": account.id},
            )
            return set(rows.scalars())

    [before] = ranks()
    lease = storage.claim(claim(account_id=account.id))
    assert lease is not None
    [after] = ranks()
    assert after != before
    _assert_tag_rows_copy_their_account(storage)
    storage.release(lease, NOW)
    _assert_tag_rows_copy_their_account(storage)
    for scope in (Scope(tag="a"), Scope(tag="b")):
        again = storage.claim(claim(scope, NOW + timedelta(seconds=1)))
        assert again is not None
        storage.complete(again, NOW + timedelta(seconds=1))
        _assert_tag_rows_copy_their_account(storage)
    storage.update(storage.get(account.id).replace(tags={"b", "c"}))
    _assert_tag_rows_copy_their_account(storage)
    storage.reset_daily_counts(owner=None)
    _assert_tag_rows_copy_their_account(storage)


def _assert_tag_rows_copy_their_account(storage: SQLStorage) -> None:
    columns = ("rank", "lease_until", "count_until", "sent_count")
    differs = " OR ".join(
        f"t.{c} <> a.{c} OR (t.{c} IS NULL) <> (a.{c} IS NULL)" for c in columns
    )
    with storage.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT t.account_id, t.tag FROM mailpool_account_tags t "
                f"JOIN mailpool_accounts a ON a.id = t.account_id WHERE {differs}"
            )
        ).all()
    assert rows == []


def test_candidates_find_the_few_accounts_in_scope_among_thousands(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    storage.add_many(
        make_account(f"bulk{n:04d}@example.com", owner=f"tenant-{n % 50}")
        for n in range(2000)
    )
    wanted = [
        make_account("needle-b@example.com", owner="needle", tags={"spring"}),
        make_account("needle-a@example.com", owner="needle", tags={"spring"}),
        make_account("needle-c@example.com", owner="needle", tags={"spring", "vip"}),
    ]
    storage.add_many(
        [
            *wanted,
            make_account("needle-off@example.com", owner="needle", status="inactive"),
            make_account("needle-autumn@example.com", owner="needle", tags={"autumn"}),
        ]
    )
    found = storage.candidates(claim(Scope(owner="needle", tag="spring")))
    assert sorted(a.email for a in found) == sorted(a.email for a in wanted)
    assert {a.email: a.tags for a in found}["needle-c@example.com"] == {"spring", "vip"}
    assert len(storage.candidates(claim(Scope(owner="needle")))) == 4


class TestSQLitePortableClaims(StorageContract):
    """The contract through the claim of databases without ``UPDATE ...
    RETURNING``: pick, then update by id."""

    @pytest.fixture
    def reopen(self, tmp_path: Path) -> Reopen:
        def open_() -> SQLStorage:
            storage = SQLStorage(_sqlite_url(tmp_path))
            storage._claim_style = "portable"
            return storage

        return open_

    @pytest.fixture
    def storage(self, reopen: Reopen) -> Iterator[Storage]:
        storage = reopen()
        yield storage
        storage.close()


# -- PostgreSQL: claims do not queue behind a row lock ----------------------------


@pytest.fixture
def postgres_storage(postgres: tuple[str, dict[str, Any]]) -> Iterator[SQLStorage]:
    """A PostgreSQL storage whose waits for a row lock time out after 10 s
    (an error, rather than a hanging test, if a claim queues)."""
    url, options = postgres
    search_path = options["connect_args"]["options"]
    storage = SQLStorage(
        url,
        engine_options={
            "connect_args": {"options": f"{search_path} -c lock_timeout=10000"}
        },
    )
    yield storage
    storage.close()


@contextlib.contextmanager
def _row_locked(storage: SQLStorage, account_id: str) -> Iterator[sa.Connection]:
    """Another transaction holds the row of ``account_id`` locked."""
    with storage.engine.connect() as conn, conn.begin():
        conn.execute(
            sa.text("SELECT id FROM mailpool_accounts WHERE id = :id FOR UPDATE"),
            {"id": account_id},
        )
        yield conn


@pytest.mark.integration
@pytest.mark.parametrize("strategy", list(Strategy))
def test_postgres_claims_skip_a_row_another_transaction_holds(
    postgres_storage: SQLStorage, strategy: Strategy
) -> None:
    storage = postgres_storage
    held = storage.add(make_account("held@example.com", tags={"t"}))
    free = storage.add(make_account("free@example.com", tags={"t"}))
    with _row_locked(storage, held.id):
        for n, moment in enumerate(seconds(*range(10))):
            scope = (Scope(), Scope(tag="t"))[n % 2]
            lease = storage.claim(
                claim(scope, moment, strategy=strategy, rng=random.Random(n))
            )
            assert lease is not None and lease.account_id == free.id
            storage.complete(lease, moment)
    assert storage.get(held.id).sent_count == 0


@pytest.mark.integration
def test_postgres_claim_waits_for_the_last_allowed_row_rather_than_refuse(
    postgres_storage: SQLStorage,
) -> None:
    storage = postgres_storage
    held = storage.add(make_account("held@example.com"))
    result: list[Lease | None] = []
    with _row_locked(storage, held.id) as holder:
        thread = threading.Thread(target=lambda: result.append(storage.claim(claim())))
        thread.start()
        # Wait (without a fixed sleep) until the claim waits for the lock.
        deadline = time.monotonic() + 30
        pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        blocked = sa.text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"
        )
        waiting = 0
        with storage.engine.connect() as observer:
            while waiting == 0 and time.monotonic() < deadline:
                # A new transaction each time: a new view of the activity.
                waiting = observer.execute(blocked, {"pid": pid}).scalar_one()
                observer.rollback()
        assert waiting == 1
    thread.join(30)
    [lease] = result
    assert lease is not None and lease.account_id == held.id


@pytest.mark.integration
def test_postgres_threads_of_several_storages_get_every_unit_and_no_more(
    postgres: tuple[str, dict[str, Any]],
) -> None:
    url, options = postgres
    storages = [SQLStorage(url, engine_options=options) for _ in range(4)]
    try:
        accounts = storages[0].add_many(
            make_account(f"user{n}@example.com", daily_limit=6, tags={"t"})
            for n in range(10)
        )
        assert accounts == 10
        # 24 threads, 100 claims for 60 units, leases completed at once.
        answers = claim_in_threads(
            storages,
            lambda moment: claim(
                Scope(tag="t"), moment, rng=random.Random(moment.microsecond)
            ),
            threads=20,
            tries=5,
            complete=True,
        )
        granted = Counter(lease.account_id for lease in answers if lease is not None)
        assert sorted(granted.values()) == [6] * 10
        for account in storages[1].accounts():
            assert (account.sent_count, account.in_flight) == (6, 0)
    finally:
        for storage in storages:
            storage.close()


# -- the clock -----------------------------------------------------------------


def test_storages_on_real_clocks_get_every_allowed_claim(
    open_sql: OpenStorage,
) -> None:
    # Four storages, four engines and pools: like four processes. Each thread
    # reads the real clock, then waits for the row lock, so the stamps reach
    # the database out of order. With min_wait_time 0 that must not matter:
    # exactly as many attempts as the limit allows, and every one is granted.
    storages = [open_sql() for _ in range(4)]
    account = storages[0].add(
        make_account(daily_limit=80, min_wait_time=0, max_in_flight=80)
    )
    refused: list[datetime] = []
    won: list[Lease] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker(storage: SQLStorage) -> None:
        start.wait()
        for _ in range(5):
            now = datetime.now(timezone.utc)
            lease = storage.claim(claim(now=now, account_id=account.id))
            if lease is not None:
                storage.complete(lease, datetime.now(timezone.utc))
            with lock:
                if lease is None:
                    refused.append(now)
                else:
                    won.append(lease)

    workers = [
        threading.Thread(target=worker, args=(storages[n % 4],)) for n in range(16)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert refused == []
    assert len(won) == 80
    stored = storages[3].get(account.id)
    assert (stored.sent_count, stored.in_flight) == (80, 0)
    later = claim(now=datetime.now(timezone.utc), account_id=account.id)
    assert storages[1].claim(later) is None


def test_a_zero_min_wait_never_refuses_a_stamp_from_a_faster_clock(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    ahead = NOW + timedelta(seconds=2)  # another machine's clock runs ahead
    account = storage.add(make_account(min_wait_time=0, last_sent_at=ahead))
    assert [a.id for a in storage.candidates(claim())] == [account.id]
    lease = storage.claim(claim())
    assert lease is not None
    storage.complete(lease, NOW)
    # The stamp never moves back in time.
    assert storage.get(account.id).last_sent_at == ahead
    assert storage.claim(claim(now=NOW + timedelta(milliseconds=1))) is not None


def test_a_positive_min_wait_counts_from_the_latest_stamp(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    ahead = NOW + timedelta(seconds=2)
    storage.add(make_account(min_wait_time=10, last_sent_at=ahead))
    assert storage.claim(claim(now=NOW + timedelta(seconds=11))) is None
    assert storage.claim(claim(now=NOW + timedelta(seconds=12))) is not None


def test_times_round_trip_as_aware_utc(open_sql: OpenStorage) -> None:
    storage = open_sql()
    paris = ZoneInfo("Europe/Paris")
    sent = datetime(2024, 5, 17, 14, 0, 0, 654321, tzinfo=paris)
    expiry = datetime(2024, 5, 18, 1, 2, 3, tzinfo=timezone(timedelta(hours=-5)))
    account = storage.add(
        make_account(
            last_sent_at=sent,
            oauth2=OAuth2Credentials(access_token="tok", token_expiry=expiry),
            timezone="Europe/Paris",
        )
    )
    stored = storage.get(account.id)
    assert stored.last_sent_at == sent
    assert stored.last_sent_at is not None
    assert stored.last_sent_at.tzinfo == timezone.utc
    assert stored.oauth2 is not None and stored.oauth2.token_expiry == expiry
    assert stored.oauth2.token_expiry is not None
    assert stored.oauth2.token_expiry.tzinfo == timezone.utc

    # The day is the date in the account's time zone: 23:30 UTC is tomorrow
    # in Paris, whatever the zone of the claim's clock.
    late = datetime(2024, 5, 17, 23, 30, tzinfo=timezone.utc)
    lease = storage.claim(claim(now=late.astimezone(ZoneInfo("Asia/Tokyo"))))
    assert lease is not None
    assert lease.day == late.astimezone(paris).date() == NOW.date() + timedelta(1)
    assert lease.account.lease_until == late + timedelta(seconds=300)
    storage.complete(lease, late)
    stored = storage.get(account.id)
    assert stored.count_day == lease.day
    assert stored.last_sent_at == late
    assert stored.last_sent_at is not None
    assert stored.last_sent_at.tzinfo == timezone.utc
    assert stored.lease_until is not None and stored.lease_until.tzinfo == timezone.utc


# -- hardening: import cost, secrets, file modes, corrupt rows, tokens ---------

# Module constants, not locals: the tracebacks below are searched with the
# locals of every frame, the test's own included.
QUERY_PASSWORD = "qu3ry-pa55word"
SSL_PASSWORD = "ssl-k3y-pa55word"
ROW_PASSWORD = "r0w-pa55word-in-parameters"
QUERY_URL = (
    f"postgresql+psycopg://mailer@127.0.0.1:1/mail?password={QUERY_PASSWORD}"
    f"&sslpassword={SSL_PASSWORD}&connect_timeout=2"
)
SHOWN_URL = "postgresql+psycopg://mailer@127.0.0.1:1/mail?connect_timeout=2"


def _full_trace(error: BaseException) -> str:
    """The traceback of ``error`` and its chain, with every frame's locals."""
    return "".join(
        traceback.TracebackException.from_exception(error, capture_locals=True).format()
    )


def _secret_account(email: str) -> Any:
    return make_account(
        email, smtp=SMTPSettings(host="smtp.example.com", password=ROW_PASSWORD)
    )


def test_importing_mailpool_imports_no_sqlalchemy() -> None:
    """The CLI imports mailpool on every run: SQLAlchemy only comes with the
    first SQLStorage (or SQLStorage.metadata)."""
    code = (
        "import sys, mailpool\n"
        "from mailpool import SQLStorage\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'sqlalchemy'))\n"
        "SQLStorage.metadata\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[:2] == ["[]", "True"]


def test_a_password_in_the_query_string_is_shown_nowhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mailpool import AccountPool

    caplog.set_level(logging.DEBUG)
    storage = open_storage(QUERY_URL)
    assert isinstance(storage, SQLStorage)
    pool = AccountPool(storage)
    with pytest.raises(StorageError) as caught:
        storage.accounts()  # nothing listens on port 1
    error = caught.value
    assert error.location == SHOWN_URL
    assert SHOWN_URL in str(error)
    shown = [
        repr(storage),
        repr(pool),
        repr(storage.engine),
        str(storage.engine.url),
        _full_trace(error),
        caplog.text,
    ]
    for text in shown:
        assert QUERY_PASSWORD not in text and SSL_PASSWORD not in text
    storage.close()


def test_an_engine_passed_in_with_a_query_password_is_redacted() -> None:
    # No local names the engine: its repr (SQLAlchemy's) shows the query.
    storage = SQLStorage(sa.create_engine(QUERY_URL))
    shown = repr(storage)
    assert shown.startswith("<SQLStorage postgresql+psycopg://mailer@127.0.0.1:1/")
    assert "password=***" in shown and "sslpassword=***" in shown
    with pytest.raises(StorageError) as caught:
        storage.accounts()
    assert QUERY_PASSWORD not in _full_trace(caught.value)
    assert QUERY_PASSWORD not in str(caught.value.location)
    storage.close()
    storage.engine.dispose()


def test_a_duplicate_account_error_chains_no_driver_error(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    storage.add(_secret_account("alice@example.com"))
    with pytest.raises(ConfigurationError, match="already uses") as caught:
        storage.add(_secret_account("ALICE@example.com"))
    error = caught.value
    assert error.__context__ is None and error.__suppress_context__
    cause = error.__cause__
    assert cause is not None
    assert cause.__traceback__ is None and cause.__context__ is None
    assert "unique" in str(cause).lower() or "duplicate" in str(cause).lower()
    assert ROW_PASSWORD not in _full_trace(error)


def test_a_storage_error_from_the_driver_keeps_only_its_message(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    storage.add(make_account("first@example.com"))
    with storage.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE mailpool_account_tags"))
        conn.execute(sa.text("DROP TABLE mailpool_accounts"))
    with pytest.raises(StorageError) as caught:
        storage.add(_secret_account("second@example.com"))
    error = caught.value
    assert error.__context__ is None
    cause = error.__cause__
    assert cause is not None and cause.__traceback__ is None
    assert str(cause) in str(error)
    assert ROW_PASSWORD not in _full_trace(error)


def test_a_new_sqlite_file_and_its_wal_and_shm_are_owner_only(
    tmp_path: Path,
) -> None:
    umask = os.umask(0o022)
    try:
        storage = SQLStorage(_sqlite_url(tmp_path))
        storage.add(make_account())
        with storage.engine.connect() as conn:  # the -shm exists while open
            conn.execute(sa.text("SELECT 1 FROM mailpool_accounts")).all()
            names = {path.name: path for path in tmp_path.glob("mailpool.db*")}
            assert {"mailpool.db", "mailpool.db-wal", "mailpool.db-shm"} <= set(names)
            modes = {n: oct(p.stat().st_mode & 0o777) for n, p in names.items()}
        assert set(modes.values()) == {"0o600"}, modes
        storage.close()
    finally:
        os.umask(umask)


def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    url = _sqlite_url(tmp_path)
    path = tmp_path / "mailpool.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    storage = SQLStorage(url)
    storage.add(make_account())
    storage.close()
    assert path.stat().st_mode & 0o777 == 0o640


CORRUPT = [
    ("status", "'bogus'", "status"),
    ("daily_limit", "-1", "daily_limit"),
    ("sent_count", "-5", "sent_count"),
    ("smtp_port", "99999", "port"),
    ("email", "'not an email'", "email"),
    ("timezone", "'Mars/Base'", "time zone"),
    ("last_sent_at", "1e300", "last_sent_at: a time out of range"),
    ("lease_until", "-1e300", "lease_until: a time out of range"),
]
SQLITE_CORRUPT = [  # values that only SQLite's dynamic types let in
    ("count_day", "'2024-13-45'", "count_day: malformed"),
    ("count_day", "12", "count_day: not a"),
    ("sent_count", "'many'", "sent_count"),
    ("daily_limit", "99999999999999", "daily_limit"),
    ("min_wait_time", "'soon'", "min_wait_time"),
    ("last_sent_at", "'yesterday'", "last_sent_at: not a number"),
]


def _raw_row(storage: SQLStorage, account_id: str) -> tuple[Any, ...]:
    with storage.engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text("SELECT * FROM mailpool_accounts WHERE id = :id"),
                {"id": account_id},
            ).one()
        )


def _check_corrupt_row(
    storage: SQLStorage, column: str, value: str, problem: str
) -> None:
    account = storage.add(make_account(daily_limit=5))
    with storage.engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE mailpool_accounts SET {column} = {value} WHERE id = :id"),
            {"id": account.id},
        )
    before = _raw_row(storage, account.id)
    reads: list[Callable[[], object]] = [
        lambda: storage.get(account.id),
        lambda: storage.get_by_email(account.email),
        storage.accounts,
    ]
    if column == "count_day":  # a usage column, which update() keeps
        reads.append(lambda: storage.update(account.replace(sender_name="New")))
    for read in reads:
        with pytest.raises(StorageError) as caught:
            read()
        assert account.id in str(caught.value) and problem in str(caught.value)
        assert caught.value.location == storage._location
    assert _raw_row(storage, account.id) == before
    # update() rewrites the settings (it is how a person repairs a row).
    # A claim raises StorageError (rolled back on SQLite; on PostgreSQL the
    # claim is one statement that commits by itself), finds the row not
    # eligible, or starts a new day's count in place of a count that ended.
    try:
        storage.claim(claim(account_id=account.id))
    except StorageError:
        if storage.engine.dialect.name == "sqlite":
            assert _raw_row(storage, account.id) == before


@pytest.mark.parametrize(
    ("column", "value", "problem"), CORRUPT, ids=[f"{c}={v}" for c, v, _ in CORRUPT]
)
def test_a_corrupt_row_is_a_storage_error_naming_the_account(
    open_sql: OpenStorage, column: str, value: str, problem: str
) -> None:
    _check_corrupt_row(open_sql(), column, value, problem)


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    SQLITE_CORRUPT,
    ids=[f"{c}={v}" for c, v, _ in SQLITE_CORRUPT],
)
def test_a_corrupt_sqlite_value_is_a_storage_error_naming_the_account(
    tmp_path: Path, column: str, value: str, problem: str
) -> None:
    storage = SQLStorage(_sqlite_url(tmp_path))
    _check_corrupt_row(storage, column, value, problem)
    storage.close()


def test_secrets_are_fernet_tokens_in_the_columns(open_sql: OpenStorage) -> None:
    from mailpool.encryption import SecretBox

    box = SecretBox(SecretBox.generate_key())
    storage = open_sql(encryption=box)
    account = storage.add(
        make_account(
            smtp=SMTPSettings(host="smtp.example.com", password=ROW_PASSWORD),
            oauth2=OAuth2Credentials(
                access_token="access-" + ROW_PASSWORD,
                refresh_token="refresh-" + ROW_PASSWORD,
                client_secret="client-" + ROW_PASSWORD,
            ),
        )
    )
    row = dict(zip(_COLUMNS(storage), _raw_row(storage, account.id), strict=True))
    for name in (
        "smtp_password",
        "oauth2_access_token",
        "oauth2_refresh_token",
        "oauth2_client_secret",
    ):
        assert str(row[name]).startswith("fernet:")
        assert ROW_PASSWORD not in str(row[name])
    assert row["email"] == account.email  # the rest stays readable
    assert storage.get(account.id) == account
    lease = storage.claim(claim())
    assert lease is not None and lease.account.smtp == account.smtp


def _COLUMNS(storage: SQLStorage) -> list[str]:
    return [column.name for column in SQLStorage.metadata.tables["mailpool_accounts"].c]


def _oauth_account() -> Any:
    return make_account(
        oauth2=OAuth2Credentials(
            access_token="old-access",
            refresh_token="old-refresh",
            token_expiry=NOW,
            client_id="client",
            client_secret="client-secret",
            token_url="https://oauth.example.com/token",
        ),
        tags={"campaign"},
    )


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_save_oauth2_tokens_is_a_compare_and_set_of_the_token_columns(
    open_sql: OpenStorage, encrypted: bool
) -> None:
    from pydantic import SecretStr

    from mailpool.encryption import SecretBox
    from mailpool.errors import AccountNotFound
    from mailpool.transport.oauth2 import TokenStore

    box = SecretBox(SecretBox.generate_key()) if encrypted else None
    storage = open_sql(encryption=box)
    assert isinstance(storage, TokenStore)
    account = storage.add(_oauth_account())
    later = NOW + timedelta(hours=1)
    tokens = OAuth2Credentials(
        access_token="new-access", refresh_token="new-refresh", token_expiry=later
    )

    # Another refresh token is stored: nothing changes.
    stale = storage.save_oauth2_tokens(
        account.id, tokens, replacing=SecretStr("not-the-stored-one")
    )
    assert stale == account == storage.get(account.id)

    saved = storage.save_oauth2_tokens(
        account.id, tokens, replacing=SecretStr("old-refresh")
    )
    stored = storage.get(account.id)
    assert saved == stored
    assert stored.oauth2 is not None and account.oauth2 is not None
    assert stored.oauth2.access_token == SecretStr("new-access")
    assert stored.oauth2.refresh_token == SecretStr("new-refresh")
    assert stored.oauth2.token_expiry == later
    # Nothing but the three token columns changed.
    assert stored.oauth2.client_secret == account.oauth2.client_secret
    assert stored.replace(oauth2=account.oauth2) == account

    with pytest.raises(AccountNotFound):
        storage.save_oauth2_tokens("nobody", tokens, replacing=None)


def test_save_oauth2_tokens_of_an_account_without_oauth2_changes_nothing(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    account = storage.add(make_account())
    tokens = OAuth2Credentials(access_token="new", refresh_token="new")
    assert storage.save_oauth2_tokens(account.id, tokens, replacing=None) == account
    assert storage.get(account.id).oauth2 is None


def test_threads_saving_tokens_at_once_apply_one_rotation(
    open_sql: OpenStorage,
) -> None:
    """Every thread replaces the same refresh token: exactly one wins."""
    from pydantic import SecretStr

    storage = open_sql()
    account = storage.add(_oauth_account())
    won: list[str] = []
    barrier = threading.Barrier(6)

    def save(n: int) -> None:
        tokens = OAuth2Credentials(access_token=f"a{n}", refresh_token=f"r{n}")
        barrier.wait()
        after = storage.save_oauth2_tokens(
            account.id, tokens, replacing=SecretStr("old-refresh")
        )
        assert after.oauth2 is not None and after.oauth2.refresh_token is not None
        if after.oauth2.refresh_token.get_secret_value() == f"r{n}":
            won.append(f"r{n}")

    threads = [threading.Thread(target=save, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = storage.get(account.id).oauth2
    assert stored is not None and stored.refresh_token is not None
    assert won == [stored.refresh_token.get_secret_value()]


@pytest.mark.integration
def test_postgres_a_connection_gone_stale_while_idle_is_replaced(
    postgres: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``pool_pre_ping`` round trip per statement: a connection idle for a
    while is pinged at checkout and replaced when the server dropped it."""
    from mailpool.storage import sql

    url, options = postgres
    storage = SQLStorage(url, engine_options=options)
    storage.add(make_account())
    with storage.engine.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    assert storage.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()
    monkeypatch.setattr(sql, "_PING_AFTER_IDLE", 0.0)
    assert len(storage.accounts()) == 1  # pinged, replaced, no error
    storage.close()


@pytest.mark.integration
def test_postgres_a_bulk_import_refreshes_the_statistics(
    postgres: tuple[str, dict[str, Any]],
) -> None:
    url, options = postgres
    storage = SQLStorage(url, engine_options=options)
    storage.add_many(make_account(f"a{i}@example.com") for i in range(1_000))
    with storage.engine.connect() as conn:
        analyzed = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN "
                "('mailpool_accounts', 'mailpool_account_tags') "
                "AND last_analyze IS NOT NULL AND schemaname = current_schema()"
            )
        ).scalar()
    assert analyzed == 2
    storage.close()
