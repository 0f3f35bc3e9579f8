"""SQLStorage: the contract on SQLite and PostgreSQL, and what only SQL has
(lazy SQLAlchemy, redacted URLs, migrations, indexed eligibility, races).

PostgreSQL tests need ``MAILPOOL_TEST_POSTGRES_URL``
(e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/mailpool_test``); each test
works in a fresh schema that is dropped afterwards, so the database's own
tables are never touched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from contract import DAY, NOW, Reopen, StorageContract, make_account

from mailpool.errors import ConfigurationError, StorageError
from mailpool.models import OAuth2Credentials, SMTPSettings
from mailpool.storage import Reservation, Scope, SQLStorage, Storage, open_storage

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
    assert "CREATE INDEX ix_mailpool_accounts_owner_status" in ddl


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


def test_owner_and_tag_longer_than_the_columns_are_refused(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    with pytest.raises(ConfigurationError, match="255"):
        storage.add(make_account(owner="o" * 256))
    with pytest.raises(ConfigurationError, match="255"):
        storage.add(make_account(tags={"t" * 256}))
    assert storage.accounts() == []


# -- eligible() is a query -----------------------------------------------------


def test_eligible_finds_the_few_accounts_in_scope_among_thousands(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    rows = [
        make_account(f"bulk{number:04d}@example.com", owner=f"tenant-{number % 50}")
        for number in range(2000)
    ]
    wanted = [
        make_account("needle-b@example.com", owner="needle", tags={"spring"}),
        make_account("needle-a@example.com", owner="needle", tags={"spring"}),
        make_account("needle-c@example.com", owner="needle", tags={"spring", "vip"}),
    ]
    ignored = [
        make_account("needle-off@example.com", owner="needle", status="inactive"),
        make_account("needle-autumn@example.com", owner="needle", tags={"autumn"}),
    ]
    _bulk_add(storage, [*rows, *wanted, *ignored])
    found = storage.eligible(Scope(owner="needle", tag="spring"), NOW)
    assert [account.email for account in found] == [
        "needle-a@example.com",
        "needle-b@example.com",
        "needle-c@example.com",
    ]
    assert found[2].tags == frozenset({"spring", "vip"})
    assert len(storage.eligible(Scope(owner="needle"), NOW)) == 4


def _bulk_add(storage: SQLStorage, accounts: list[Any]) -> None:
    """Thousands of rows in one transaction (add() commits each one)."""
    from mailpool.storage.sql import _settings_values

    storage.accounts()  # creates the tables
    tables = SQLStorage.metadata.tables
    with storage.engine.begin() as conn:
        conn.execute(
            sa.insert(tables["mailpool_accounts"]),
            [
                {
                    "id": account.id,
                    **_settings_values(account),
                    "sent_count": 0,
                    "count_day": None,
                    "previous_last_sent_at": None,
                    "last_sent_at": None,
                }
                for account in accounts
            ],
        )
        tags = [
            {"account_id": account.id, "tag": tag}
            for account in accounts
            for tag in account.tags
        ]
        conn.execute(sa.insert(tables["mailpool_account_tags"]), tags)


def test_eligible_by_owner_can_use_the_owner_status_index(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    storage.add(make_account(owner="acme"))
    statement = storage._select(*storage._eligible_filters(Scope(owner="acme"), NOW))
    sql = str(
        statement.compile(
            dialect=storage.engine.dialect, compile_kwargs={"literal_binds": True}
        )
    )
    with storage.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = conn.exec_driver_sql("EXPLAIN " + sql).scalars().all()
        else:
            plan = [
                row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
            ]
    assert "ix_mailpool_accounts_owner_status" in "\n".join(plan)


# -- reserve() and the clock ---------------------------------------------------


@contextlib.contextmanager
def _account_statements(storage: SQLStorage) -> Iterator[list[tuple[str, list[Any]]]]:
    """Collects the statements on mailpool_accounts that the block sends to the
    database (seen by ``before_cursor_execute``), each with its parameters."""
    seen: list[tuple[str, list[Any]]] = []

    def record(
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if "mailpool_accounts" in statement:
            values = parameters.values() if isinstance(parameters, dict) else parameters
            seen.append((" ".join(statement.split()), list(values or ())))

    sa.event.listen(storage.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(storage.engine, "before_cursor_execute", record)


def test_reserve_is_one_conditional_update(open_sql: OpenStorage) -> None:
    # Only one statement that checks and counts at once keeps the limit under
    # concurrency: a SELECT of the count followed by an UPDATE (or an UPDATE
    # writing back a count computed in Python) lets two workers take one unit.
    storage = open_sql()
    account = storage.add(make_account(daily_limit=38, sent_count=37, count_day=DAY))
    answers: list[Reservation | None] = []
    for moment in (NOW, NOW + timedelta(seconds=1)):  # granted, then refused
        with _account_statements(storage) as statements:
            answers.append(storage.reserve(account.id, moment))
        kinds = [sql.split()[0].upper() for sql, _ in statements]
        assert kinds.count("UPDATE") == 1, kinds
        assert kinds[0] == "UPDATE", f"read before the update: {kinds}"
        update, parameters = statements[0]
        _, where = update.split(" WHERE ", 1)
        assert "daily_limit" in where  # the limit is checked by the UPDATE itself
        assert "sent_count +" in update  # and the count incremented by the database
        assert not {37, 38} & set(parameters)  # not read, then written back
    assert [answer is not None for answer in answers] == [True, False]
    assert storage.get(account.id).sent_count == 38


def test_storages_on_real_clocks_get_every_allowed_reservation(
    open_sql: OpenStorage,
) -> None:
    # Four storages, four engines and pools: like four processes. Each thread
    # reads the real clock, then waits for the row lock, so the stamps reach
    # the database out of order. With min_wait_time 0 that must not matter:
    # exactly as many attempts as the limit allows, and every one is granted.
    storages = [open_sql() for _ in range(4)]
    account = storages[0].add(make_account(daily_limit=80, min_wait_time=0))
    refused: list[datetime] = []
    won: list[Reservation] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker(storage: SQLStorage) -> None:
        start.wait()
        for _ in range(5):
            now = datetime.now(timezone.utc)
            reservation = storage.reserve(account.id, now)
            with lock:
                if reservation is None:
                    refused.append(now)
                else:
                    won.append(reservation)

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
    assert stored.sent_count == 80
    # The stamp is the latest clock reading of all: it never moved back.
    assert stored.last_sent_at == max(r.reserved_at for r in won)
    assert storages[1].reserve(account.id, datetime.now(timezone.utc)) is None


def test_a_zero_min_wait_never_refuses_a_stamp_from_a_faster_clock(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    ahead = NOW + timedelta(seconds=2)  # another machine's clock runs ahead
    account = storage.add(make_account(min_wait_time=0, last_sent_at=ahead))
    reservation = storage.reserve(account.id, NOW)
    assert reservation is not None
    # The stamp never moves back in time.
    assert reservation.reserved_at == ahead
    assert storage.get(account.id).last_sent_at == ahead
    assert [a.id for a in storage.eligible(Scope(), NOW)] == [account.id]
    storage.release(reservation)
    assert storage.get(account.id).sent_count == 0


def test_release_restores_a_missing_stamp(open_sql: OpenStorage) -> None:
    storage = open_sql()
    account = storage.add(make_account(min_wait_time=60))
    reservation = storage.reserve(account.id, NOW)
    assert reservation is not None
    assert reservation.previous_last_sent_at is None
    storage.release(reservation)
    stored = storage.get(account.id)
    assert (stored.sent_count, stored.last_sent_at) == (0, None)
    assert storage.reserve(account.id, NOW + timedelta(seconds=1)) is not None


def test_a_positive_min_wait_counts_from_the_latest_stamp(
    open_sql: OpenStorage,
) -> None:
    storage = open_sql()
    ahead = NOW + timedelta(seconds=2)
    account = storage.add(make_account(min_wait_time=10, last_sent_at=ahead))
    assert storage.reserve(account.id, NOW + timedelta(seconds=11)) is None
    assert storage.reserve(account.id, NOW + timedelta(seconds=12)) is not None


def test_times_round_trip_as_aware_utc(open_sql: OpenStorage) -> None:
    storage = open_sql()
    paris = ZoneInfo("Europe/Paris")
    sent = datetime(2024, 5, 17, 14, 0, 0, 654321, tzinfo=paris)
    expiry = datetime(2024, 5, 18, 1, 2, 3, tzinfo=timezone(timedelta(hours=-5)))
    account = storage.add(
        make_account(
            last_sent_at=sent,
            oauth2=OAuth2Credentials(access_token="tok", token_expiry=expiry),
        )
    )
    stored = storage.get(account.id)
    assert stored.last_sent_at == sent
    assert stored.last_sent_at is not None
    assert stored.last_sent_at.tzinfo == timezone.utc
    assert stored.oauth2 is not None and stored.oauth2.token_expiry == expiry
    assert stored.oauth2.token_expiry is not None
    assert stored.oauth2.token_expiry.tzinfo == timezone.utc

    # The day is now.date() in the pool's time zone: 23:30 UTC is tomorrow in Paris.
    late = datetime(2024, 5, 17, 23, 30, tzinfo=timezone.utc).astimezone(paris)
    reservation = storage.reserve(account.id, late)
    assert reservation is not None
    assert reservation.day == late.date() == NOW.date() + timedelta(days=1)
    stored = storage.get(account.id)
    assert stored.count_day == late.date()
    assert stored.last_sent_at == late
    assert stored.last_sent_at is not None
    assert stored.last_sent_at.tzinfo == timezone.utc
