"""SQLStorage: accounts in a SQL database, through SQLAlchemy Core.

Needs the ``sql`` extra (``pip install 'mailpool[sql]'``), and ``postgres`` for
PostgreSQL. SQLAlchemy is imported when a :class:`SQLStorage` is created, never
when :mod:`mailpool` is imported.

Tables (``SQLStorage.metadata`` holds them, e.g. for Alembic)::

    mailpool_accounts       one row per account: settings, secrets, usage counters
    mailpool_account_tags   (account_id, tag), indexed by tag

Times are stored as seconds since the Unix epoch (double precision), so that the
minimum-wait check is plain arithmetic on every database; ``count_day`` is a
``DATE`` in the pool's time zone (``now.date()``), as in every backend.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from mailpool.errors import (
    AccountNotFound,
    ConfigurationError,
    MailpoolError,
    StorageError,
)
from mailpool.models import Account, AccountStatus, OAuth2Credentials, SMTPSettings
from mailpool.storage.base import Reservation, Scope, duplicate_email, duplicate_id

if TYPE_CHECKING:
    from sqlalchemy import (
        URL,
        ColumnElement,
        Connection,
        Engine,
        MetaData,
        Select,
        Table,
    )
    from sqlalchemy.engine import RowMapping

__all__ = ["SQLStorage"]

logger = logging.getLogger("mailpool.storage.sql")

ACCOUNTS_TABLE = "mailpool_accounts"
TAGS_TABLE = "mailpool_account_tags"

_MISSING_SQLALCHEMY = "SQLStorage needs SQLAlchemy: pip install 'mailpool[sql]'"
_MAX_NAME = 255  # owner and tag columns are VARCHAR(255)
_SQLITE_BUSY_TIMEOUT = 30.0  # seconds a SQLite writer waits for the write lock
_WAL_ATTEMPTS = 20
# Key of the PostgreSQL advisory lock that serializes CREATE TABLE between
# processes starting at the same time ("mailpool" in ASCII).
_DDL_LOCK_KEY = 0x6D61696C706F6F6C


def _require_sqlalchemy() -> None:
    """Import SQLAlchemy, or say which extra to install."""
    try:
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(_MISSING_SQLALCHEMY) from exc


# --------------------------------------------------------------------- schema


@dataclass(frozen=True)
class _Schema:
    metadata: MetaData
    accounts: Table
    tags: Table


_schema_lock = threading.Lock()
_schema: _Schema | None = None


def _get_schema() -> _Schema:
    """The tables, built once on first use (SQLAlchemy is imported here)."""
    global _schema
    with _schema_lock:
        if _schema is None:
            _require_sqlalchemy()
            _schema = _build_schema()
        return _schema


def _build_schema() -> _Schema:
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    metadata = sa.MetaData()
    # The case-folded email: unique, and the sort key of accounts() and
    # eligible(). PostgreSQL compares it with the "C" collation (code points,
    # like Python's sorted() and SQLite's BINARY), not the server's locale.
    email_key = sa.String(512).with_variant(
        postgresql.VARCHAR(512, collation="C"), "postgresql"
    )
    accounts = sa.Table(
        ACCOUNTS_TABLE,
        metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("email_key", email_key, nullable=False),
        sa.Column("sender_name", sa.Text, nullable=False),
        sa.Column("owner", sa.String(_MAX_NAME), nullable=True),
        sa.Column("connection_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text, nullable=True),
        sa.Column("daily_limit", sa.Integer, nullable=False),
        sa.Column("min_wait_time", sa.Double, nullable=False),
        sa.Column("smtp_host", sa.String(255), nullable=False),
        sa.Column("smtp_port", sa.Integer, nullable=False),
        sa.Column("smtp_use_tls", sa.Boolean, nullable=False),
        sa.Column("smtp_use_ssl", sa.Boolean, nullable=False),
        sa.Column("smtp_username", sa.Text, nullable=True),
        sa.Column("smtp_password", sa.Text, nullable=True),
        sa.Column("smtp_allow_insecure_auth", sa.Boolean, nullable=False),
        sa.Column("has_oauth2", sa.Boolean, nullable=False),
        sa.Column("oauth2_access_token", sa.Text, nullable=True),
        sa.Column("oauth2_refresh_token", sa.Text, nullable=True),
        sa.Column("oauth2_token_expiry", sa.Double, nullable=True),
        # Usage counters. Column order matters only to databases that apply
        # SET clauses left to right (MySQL): previous_last_sent_at must copy
        # last_sent_at before it is overwritten.
        sa.Column("sent_count", sa.Integer, nullable=False),
        sa.Column("count_day", sa.Date, nullable=True),
        # last_sent_at as it was before the latest reservation: reserve() sets
        # it in the same UPDATE, so one statement yields both values.
        sa.Column("previous_last_sent_at", sa.Double, nullable=True),
        sa.Column("last_sent_at", sa.Double, nullable=True),
        sa.UniqueConstraint("email_key", name="uq_mailpool_accounts_email_key"),
        sa.Index("ix_mailpool_accounts_owner_status", "owner", "status"),
        comment="mailpool sender accounts. Holds SMTP passwords and OAuth2 "
        "tokens: protect this database like any credential store.",
    )
    tags = sa.Table(
        TAGS_TABLE,
        metadata,
        sa.Column(
            "account_id",
            sa.String(64),
            sa.ForeignKey(f"{ACCOUNTS_TABLE}.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tag", sa.String(_MAX_NAME), primary_key=True),
        sa.Index("ix_mailpool_account_tags_tag", "tag", "account_id"),
    )
    return _Schema(metadata, accounts, tags)


class _MetadataAttribute:
    """``SQLStorage.metadata``: built on first access, so that importing
    mailpool does not need SQLAlchemy."""

    def __get__(self, instance: object, owner: type | None = None) -> MetaData:
        return _get_schema().metadata


# ---------------------------------------------------------------- conversions


def _epoch(value: datetime | None) -> float | None:
    """Seconds since the Unix epoch; a naive datetime counts as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def _from_epoch(value: float | None) -> datetime | None:
    """An aware UTC datetime. Exact for microsecond times: a double has about
    0.2 microseconds of resolution at today's epoch values."""
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def _settings_values(account: Account) -> dict[str, Any]:
    """The columns :meth:`SQLStorage.update` writes: everything but usage."""
    smtp = account.smtp
    oauth2 = account.oauth2 or OAuth2Credentials()
    return {
        "email": account.email,
        "email_key": account.email.casefold(),
        "sender_name": account.sender_name,
        "owner": account.owner,
        "connection_type": account.connection_type.value,
        "status": account.status.value,
        "status_reason": account.status_reason,
        "daily_limit": account.daily_limit,
        "min_wait_time": account.min_wait_time,
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_use_tls": smtp.use_tls,
        "smtp_use_ssl": smtp.use_ssl,
        "smtp_username": smtp.username,
        "smtp_password": _secret(smtp.password),
        "smtp_allow_insecure_auth": smtp.allow_insecure_auth,
        "has_oauth2": account.oauth2 is not None,
        "oauth2_access_token": _secret(oauth2.access_token),
        "oauth2_refresh_token": _secret(oauth2.refresh_token),
        "oauth2_token_expiry": _epoch(oauth2.token_expiry),
    }


def _check_lengths(account: Account) -> None:
    for what, value in [("owner", account.owner), *(("tag", t) for t in account.tags)]:
        if value is not None and len(value) > _MAX_NAME:
            raise ConfigurationError(
                f"SQLStorage keeps an account's {what} in {_MAX_NAME} characters: "
                f"shorten {value[:40]!r}..."
            )


def _to_account(row: RowMapping, tags: Iterable[str]) -> Account:
    oauth2 = None
    if row["has_oauth2"]:
        oauth2 = OAuth2Credentials(
            access_token=row["oauth2_access_token"],
            refresh_token=row["oauth2_refresh_token"],
            token_expiry=_from_epoch(row["oauth2_token_expiry"]),
        )
    count_day = row["count_day"]
    if isinstance(count_day, str):  # a driver without date conversion
        count_day = date.fromisoformat(count_day)
    return Account(
        id=row["id"],
        email=row["email"],
        sender_name=row["sender_name"],
        owner=row["owner"],
        tags=frozenset(tags),
        connection_type=row["connection_type"],
        status=row["status"],
        status_reason=row["status_reason"],
        daily_limit=row["daily_limit"],
        min_wait_time=row["min_wait_time"],
        smtp=SMTPSettings(
            host=row["smtp_host"],
            port=row["smtp_port"],
            use_tls=bool(row["smtp_use_tls"]),
            use_ssl=bool(row["smtp_use_ssl"]),
            username=row["smtp_username"],
            password=row["smtp_password"],
            allow_insecure_auth=bool(row["smtp_allow_insecure_auth"]),
        ),
        oauth2=oauth2,
        sent_count=row["sent_count"],
        count_day=count_day,
        last_sent_at=_from_epoch(row["last_sent_at"]),
    )


# -------------------------------------------------------------------- engine


def _is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


def _create_engine(url: str | URL, options: Mapping[str, Any]) -> Engine:
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:
        # Echo no part of an unparsable URL but its scheme: where the
        # password starts is exactly what could not be parsed.
        scheme, sep, _ = str(url).partition("://")
        shown = f"the {scheme!r} URL" if sep and scheme.isprintable() else "the URL"
        raise ConfigurationError(
            f"{shown} is not a valid database URL: use e.g. sqlite:///app.db or "
            "postgresql+psycopg://user:password@host/db (quote special "
            "characters in the password with urllib.parse.quote_plus)"
        ) from exc
    if parsed.host and "@" in parsed.host:
        # "user:p@ss@host" parses as password "p", host "ss@host": refuse it
        # rather than show the rest of the password in every message.
        raise ConfigurationError(
            "the database URL has an '@' in its host: quote special characters "
            "in the password with urllib.parse.quote_plus"
        )
    if parsed.drivername in ("postgres", "postgresql"):
        # mailpool[postgres] installs psycopg 3; SQLAlchemy 2.0 would pick
        # psycopg2 for a bare postgresql:// URL.
        parsed = parsed.set(drivername="postgresql+psycopg")
    shown = parsed.render_as_string(hide_password=True)

    kwargs: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        connect_args["timeout"] = _SQLITE_BUSY_TIMEOUT
        if _is_sqlite_memory(parsed):
            # One database per connection otherwise: share a single connection
            # (SQLStorage serializes its use with a lock).
            kwargs["poolclass"] = sa.pool.StaticPool
            connect_args["check_same_thread"] = False
    options = dict(options)
    connect_args.update(options.pop("connect_args", {}))
    kwargs.update(options)
    kwargs["connect_args"] = connect_args
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except ImportError as exc:
        hint = (
            "pip install 'mailpool[postgres]'"
            if parsed.get_backend_name() == "postgresql"
            else f"install the Python driver for {parsed.drivername}"
        )
        raise ConfigurationError(
            f"SQLStorage cannot load the database driver for {parsed.drivername!r} "
            f"({exc.name or exc}): {hint}"
        ) from exc
    except sa.exc.NoSuchModuleError as exc:
        raise ConfigurationError(
            f"SQLAlchemy knows no database {parsed.drivername!r} (in {shown}): "
            "use e.g. sqlite:///app.db or postgresql+psycopg://user:password@host/db"
        ) from exc
    except (sa.exc.ArgumentError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"invalid URL options or engine_options for {shown}: {exc}"
        ) from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, memory=_is_sqlite_memory(parsed))
    return engine


def _configure_sqlite(engine: Engine, *, memory: bool) -> None:
    """SQLAlchemy's recipe for real SQLite transactions (the sqlite3 module's
    own BEGIN handling is off), plus write transactions that take the write
    lock up front (``BEGIN IMMEDIATE``), so that concurrent processes queue on
    the busy timeout instead of failing with "database is locked". WAL lets
    readers proceed while one process writes."""
    from sqlalchemy import event

    busy = engine.dialect.loaded_dbapi.OperationalError

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                _enable_wal(cursor, busy)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(
            conn.get_execution_options().get("mailpool_sqlite_begin", "BEGIN")
        )


def _enable_wal(cursor: Any, busy: type[Exception]) -> None:
    """Switch a SQLite file to WAL (it stays so). Processes converting the
    same file at once get "database is locked" without waiting (SQLite's
    deadlock avoidance), so retry briefly; WAL only helps concurrency, so a
    database that stays in rollback-journal mode still works."""
    for attempt in range(_WAL_ATTEMPTS):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except busy:
            time.sleep(0.02 * (attempt + 1))
    logger.warning("could not switch the SQLite database to WAL mode; continuing")


# ------------------------------------------------------------------- storage


class SQLStorage:
    """Accounts in SQLite, PostgreSQL or another SQLAlchemy database.

    Share one database between threads, processes and machines: every
    reservation is a single conditional ``UPDATE``, so no daily limit or
    minimum wait is ever exceeded. Use PostgreSQL when several machines send.

    :param url: a SQLAlchemy URL (``sqlite:///app.db``,
        ``postgresql+psycopg://user:password@host/db``), or an
        :class:`sqlalchemy.engine.Engine` you configured (it is not disposed by
        :meth:`close`).
    :param engine_options: keyword arguments for
        :func:`sqlalchemy.create_engine` (e.g. ``pool_size``), merged over
        mailpool's defaults (``pool_pre_ping=True``, ``hide_parameters=True``,
        a 30 s busy timeout on SQLite).
    :param create_tables: create the tables on first use when they are
        missing; pass ``False`` when your own migrations create them from
        :attr:`metadata`.
    :raises ConfigurationError: if SQLAlchemy or the database driver is not
        installed, or the URL is malformed.

    The database holds SMTP passwords and OAuth2 tokens as plain text: protect
    it (and its backups) like any credential store.

    .. versionadded:: 0.1
    """

    metadata = _MetadataAttribute()
    """The :class:`sqlalchemy.MetaData` of mailpool's tables (for Alembic
    ``target_metadata``, or ``metadata.create_all(engine)``)."""

    def __init__(
        self,
        url: str | URL | Engine,
        *,
        engine_options: Mapping[str, Any] | None = None,
        create_tables: bool = True,
    ) -> None:
        _require_sqlalchemy()
        import sqlalchemy as sa

        self._schema = _get_schema()
        if isinstance(url, sa.Engine):
            if engine_options:
                raise ConfigurationError(
                    "engine_options apply only when SQLStorage creates the engine "
                    "from a URL: configure your Engine yourself"
                )
            self._engine = url
            self._owns_engine = False
        else:
            self._engine = _create_engine(url, engine_options or {})
            self._owns_engine = True
        self._location = self._engine.url.render_as_string(hide_password=True)
        self._password = self._engine.url.password
        # SQLAlchemy wraps driver errors; the driver's own base class catches
        # what a connection event hook may raise unwrapped.
        self._errors: tuple[type[BaseException], ...] = (
            sa.exc.SQLAlchemyError,
            self._engine.dialect.loaded_dbapi.Error,
        )
        self._create_tables = create_tables
        self._ready = False
        self._ready_lock = threading.Lock()
        self._closed = False
        if self._owns_engine and self._engine.dialect.name == "sqlite":
            self._writer: Engine = self._engine.execution_options(
                mailpool_sqlite_begin="BEGIN IMMEDIATE"
            )
        else:
            self._writer = self._engine
        # An in-memory SQLite database lives in one shared connection: take
        # turns. Everything else gets a pooled connection per call.
        self._serial: AbstractContextManager[Any] = (
            threading.RLock() if _is_sqlite_memory(self._engine.url) else nullcontext()
        )

    def __repr__(self) -> str:
        return f"<SQLStorage {self._location}>"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (its URL renders without the password)."""
        return self._engine

    # ------------------------------------------------------------ plumbing

    @contextmanager
    def _map_errors(
        self, action: str, *, duplicate: Account | None = None, new: bool = False
    ) -> Iterator[None]:
        """Turn driver errors into StorageError (the one place that does).

        With ``duplicate``, an integrity error that another account explains
        becomes a ConfigurationError naming the clash (``new``: the id too).
        """
        try:
            yield
        except MailpoolError:
            raise
        except self._errors as exc:
            from sqlalchemy.exc import IntegrityError

            if duplicate is not None and isinstance(exc, IntegrityError):
                clash = self._find_clash(duplicate, new=new)
                if clash is not None:
                    raise clash from exc
            message = f"could not {action} in {self._location}: {self._describe(exc)}"
            logger.debug("%s", message)
            raise StorageError(message, location=self._location) from exc

    def _describe(self, exc: BaseException) -> str:
        """The driver's own first line, without parameters or password."""
        cause = getattr(exc, "orig", None)
        error = cause if isinstance(cause, BaseException) else exc
        lines = str(error).strip().splitlines()
        text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _find_clash(self, account: Account, *, new: bool) -> ConfigurationError | None:
        import sqlalchemy as sa

        a = self._schema.accounts
        try:
            with self._engine.connect() as conn:
                if (
                    new
                    and conn.execute(
                        sa.select(a.c.id).where(a.c.id == account.id)
                    ).first()
                ):
                    return duplicate_id(account.id)
                other = conn.execute(
                    sa.select(a.c.id).where(
                        a.c.email_key == account.email.casefold(), a.c.id != account.id
                    )
                ).scalar()
        except self._errors:
            return None
        if other is None:
            return None
        return duplicate_email(account.email, other)

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        with self._serial, self._map_errors(action):
            self._ensure_tables()
            with self._engine.connect() as conn:
                yield conn

    @contextmanager
    def _write(
        self, action: str, *, duplicate: Account | None = None, new: bool = False
    ) -> Iterator[Connection]:
        with self._serial, self._map_errors(action, duplicate=duplicate, new=new):
            self._ensure_tables()
            with self._writer.begin() as conn:
                yield conn

    def _ensure_tables(self) -> None:
        """Check (and create, unless told not to) the tables, once."""
        if self._ready:
            return
        import sqlalchemy as sa

        names = [self._schema.accounts.name, self._schema.tags.name]
        with self._ready_lock:
            if self._ready:
                return
            with self._writer.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Processes starting together must not race to CREATE.
                    conn.execute(
                        sa.select(sa.func.pg_advisory_xact_lock(_DDL_LOCK_KEY))
                    )
                inspector = sa.inspect(conn)
                missing = [name for name in names if not inspector.has_table(name)]
                if missing and not self._create_tables:
                    raise StorageError(
                        f"the table(s) {', '.join(missing)} are missing in "
                        f"{self._location}: create them with your migrations (from "
                        "SQLStorage.metadata) or pass create_tables=True",
                        location=self._location,
                    )
                if missing:
                    self._schema.metadata.create_all(conn, checkfirst=True)
                    logger.info("created the mailpool tables in %s", self._location)
            self._ready = True

    def _select(self, *where: ColumnElement[bool]) -> Select[Any]:
        """Accounts left-joined to their tags: one row per tag (or one row)."""
        import sqlalchemy as sa

        a, t = self._schema.accounts, self._schema.tags
        return (
            sa.select(*a.c, t.c.tag)
            .select_from(a.outerjoin(t, t.c.account_id == a.c.id))
            .where(*where)
            .order_by(a.c.email_key, a.c.id, t.c.tag)
        )

    def _query(
        self, conn: Connection, *where: ColumnElement[bool]
    ) -> list[tuple[RowMapping, Account]]:
        """Accounts (with their tags, in one statement) ordered by email."""
        found = []
        rows = conn.execute(self._select(*where)).mappings()
        for _, group in itertools.groupby(rows, key=lambda row: row["id"]):
            group_rows = list(group)
            first = group_rows[0]
            tags = [row["tag"] for row in group_rows if row["tag"] is not None]
            try:
                account = _to_account(first, tags)
            except ConfigurationError as exc:
                raise StorageError(
                    f"account {first['id']!r} in {self._location} is invalid: {exc}",
                    location=self._location,
                ) from exc
            found.append((first, account))
        return found

    def _accounts_where(
        self, conn: Connection, *where: ColumnElement[bool]
    ) -> list[Account]:
        return [account for _, account in self._query(conn, *where)]

    def _scope_filters(
        self,
        owner: str | None = None,
        tag: str | None = None,
        account_ids: frozenset[str] | None = None,
    ) -> list[ColumnElement[bool]]:
        import sqlalchemy as sa

        a = self._schema.accounts
        where: list[ColumnElement[bool]] = []
        if owner is not None:
            where.append(a.c.owner == owner)
        if tag is not None:
            tagged = self._schema.tags.alias("scope_tags")
            where.append(
                sa.exists().where(tagged.c.account_id == a.c.id, tagged.c.tag == tag)
            )
        if account_ids is not None:
            where.append(a.c.id.in_(sorted(account_ids)))
        return where

    def _available(self, now: datetime) -> list[ColumnElement[bool]]:
        """Active, under the daily limit on ``now``'s day, wait elapsed.

        The minimum-wait condition is immune to clock skew between processes:
        a ``min_wait_time`` of 0 never refuses (a stamp "from the future" left
        by a process whose clock runs ahead cannot block anyone), and a positive
        wait compares the caller's ``now`` with the stored stamp, which
        :meth:`reserve` keeps monotonic. See :meth:`reserve`.
        """
        import sqlalchemy as sa

        a = self._schema.accounts
        stamp: ColumnElement[float] = sa.literal(_epoch(now), sa.Double())
        sent_today = sa.case((a.c.count_day == now.date(), a.c.sent_count), else_=0)
        return [
            a.c.status == AccountStatus.ACTIVE.value,
            sent_today < a.c.daily_limit,
            sa.or_(
                a.c.min_wait_time <= 0,
                a.c.last_sent_at.is_(None),
                a.c.last_sent_at <= stamp - a.c.min_wait_time,
            ),
        ]

    # ------------------------------------------------------------ protocol

    def add(self, account: Account, /) -> Account:
        """Store a new account; see :meth:`Storage.add`."""
        import sqlalchemy as sa

        _check_lengths(account)
        row = {
            "id": account.id,
            **_settings_values(account),
            "sent_count": account.sent_count,
            "count_day": account.count_day,
            "previous_last_sent_at": None,
            "last_sent_at": _epoch(account.last_sent_at),
        }
        with self._write("add an account", duplicate=account, new=True) as conn:
            conn.execute(sa.insert(self._schema.accounts), [row])
            self._insert_tags(conn, account)
        logger.debug("added account %s", account.id)
        return account

    def _insert_tags(self, conn: Connection, account: Account) -> None:
        import sqlalchemy as sa

        if account.tags:
            conn.execute(
                sa.insert(self._schema.tags),
                [
                    {"account_id": account.id, "tag": tag}
                    for tag in sorted(account.tags)
                ],
            )

    def get(self, account_id: str, /) -> Account:
        """See :meth:`Storage.get`."""
        with self._read("read an account") as conn:
            found = self._accounts_where(conn, self._schema.accounts.c.id == account_id)
        if not found:
            raise AccountNotFound(account_id, location=self._location)
        return found[0]

    def get_by_email(self, email: str, /) -> Account:
        """See :meth:`Storage.get_by_email`."""
        key = email.strip().casefold()
        with self._read("read an account") as conn:
            found = self._accounts_where(conn, self._schema.accounts.c.email_key == key)
        if not found:
            raise AccountNotFound(email, location=self._location)
        return found[0]

    def accounts(
        self,
        *,
        owner: str | None = None,
        tag: str | None = None,
        status: AccountStatus | None = None,
    ) -> list[Account]:
        """See :meth:`Storage.accounts`."""
        where = self._scope_filters(owner, tag)
        if status is not None:
            where.append(self._schema.accounts.c.status == AccountStatus(status).value)
        with self._read("list accounts") as conn:
            return self._accounts_where(conn, *where)

    def update(self, account: Account, /) -> Account:
        """See :meth:`Storage.update`: settings change, usage counters stay."""
        import sqlalchemy as sa

        _check_lengths(account)
        a, t = self._schema.accounts, self._schema.tags
        with self._write("update an account", duplicate=account) as conn:
            changed = conn.execute(
                sa.update(a)
                .where(a.c.id == account.id)
                .values(_settings_values(account))
            )
            if changed.rowcount == 0:
                raise AccountNotFound(account.id, location=self._location)
            conn.execute(sa.delete(t).where(t.c.account_id == account.id))
            self._insert_tags(conn, account)
            return self._accounts_where(conn, a.c.id == account.id)[0]

    def remove(self, account_id: str, /) -> None:
        """See :meth:`Storage.remove`."""
        import sqlalchemy as sa

        a, t = self._schema.accounts, self._schema.tags
        with self._write("remove an account") as conn:
            # Tags first: SQLite enforces ON DELETE CASCADE only with the
            # foreign_keys pragma, which a caller's own engine may not set.
            conn.execute(sa.delete(t).where(t.c.account_id == account_id))
            if conn.execute(sa.delete(a).where(a.c.id == account_id)).rowcount == 0:
                raise AccountNotFound(account_id, location=self._location)
        logger.debug("removed account %s", account_id)

    def eligible(self, scope: Scope, now: datetime, /) -> list[Account]:
        """See :meth:`Storage.eligible`: one indexed query, filtered in SQL."""
        where = self._eligible_filters(scope, now)
        day = now.date()
        with self._read("find eligible accounts") as conn:
            return [
                account.as_of(day) for account in self._accounts_where(conn, *where)
            ]

    def _eligible_filters(
        self, scope: Scope, now: datetime
    ) -> list[ColumnElement[bool]]:
        return [
            *self._scope_filters(scope.owner, scope.tag, scope.account_ids),
            *self._available(now),
        ]

    def reserve(self, account_id: str, now: datetime, /) -> Reservation | None:
        """Count one send at ``now`` with ONE conditional ``UPDATE``.

        The ``WHERE`` clause re-checks status, daily limit and minimum wait on
        the row as the database locks it, so concurrent reservations can never
        exceed a limit (PostgreSQL re-evaluates the condition on the latest row
        version after waiting for a concurrent writer; SQLite runs one write
        transaction at a time). No row updated means not eligible (or missing).

        The clock. ``now`` is the caller's clock; processes and machines
        disagree slightly, so the stamps they write do not follow the order
        in which the database applies their updates. Comparing ``last_sent_at
        <= now - min_wait_time`` alone would then refuse sends that are
        allowed: with ``min_wait_time`` 0, a process whose ``now`` is a
        millisecond behind the stamp another one just wrote would be turned
        away (measured: PostgreSQL granted 3,473 of 4,000 allowed
        reservations that way). Hence:

        - ``min_wait_time = 0`` short-circuits the wait check: never refused.
        - The new stamp is ``max(last_sent_at, now)``, so stamps never move
          back in time and a positive wait always counts from the latest send
          that anyone recorded. With a positive wait a granted ``now`` is
          always past the stored stamp, so this only matters for a wait of 0.
        - The day (``count_day``) is ``now.date()`` in the pool's time zone,
          as in every backend; only a skew across midnight can count a send
          on the neighbouring day.

        A positive wait is then at most off by the skew between the clocks
        (keep them NTP-synchronized); the daily limit never is.
        """
        import sqlalchemy as sa

        a = self._schema.accounts
        day = now.date()
        stamp: ColumnElement[float] = sa.literal(_epoch(now), sa.Double())
        statement = (
            sa.update(a)
            .where(a.c.id == account_id, *self._available(now))
            .values(
                sent_count=sa.case((a.c.count_day == day, a.c.sent_count + 1), else_=1),
                count_day=day,
                previous_last_sent_at=a.c.last_sent_at,
                last_sent_at=sa.case(
                    (a.c.last_sent_at > stamp, a.c.last_sent_at), else_=stamp
                ),
            )
        )
        with self._write("reserve an account") as conn:
            if conn.execute(statement).rowcount != 1:
                exists = conn.execute(
                    sa.select(a.c.id).where(a.c.id == account_id)
                ).first()
                if exists is None:
                    raise AccountNotFound(account_id, location=self._location)
                logger.debug("account %s not eligible at %s", account_id, now)
                return None
            # Our own write, still locked by this transaction.
            row, account = self._query(conn, a.c.id == account_id)[0]
        reserved_at = _from_epoch(row["last_sent_at"])
        assert reserved_at is not None
        return Reservation(
            account=account,
            day=day,
            reserved_at=reserved_at,
            previous_last_sent_at=_from_epoch(row["previous_last_sent_at"]),
        )

    def release(self, reservation: Reservation, /) -> None:
        """See :meth:`Storage.release`: one conditional ``UPDATE``, the rule of
        :func:`~mailpool.storage.base.released`."""
        import sqlalchemy as sa

        a = self._schema.accounts
        reserved: ColumnElement[float] = sa.literal(
            _epoch(reservation.reserved_at), sa.Double()
        )
        previous = _epoch(reservation.previous_last_sent_at)
        counted = sa.and_(a.c.count_day == reservation.day, a.c.sent_count > 0)
        stamped = a.c.last_sent_at == reserved
        statement = (
            sa.update(a)
            .where(a.c.id == reservation.account_id, sa.or_(counted, stamped))
            .values(
                sent_count=sa.case((counted, a.c.sent_count - 1), else_=a.c.sent_count),
                last_sent_at=sa.case(
                    (
                        stamped,
                        sa.null()
                        if previous is None
                        else sa.literal(previous, sa.Double()),
                    ),
                    else_=a.c.last_sent_at,
                ),
            )
        )
        with self._write("release a reservation") as conn:
            conn.execute(statement)

    def reset_daily_counts(self, *, owner: str | None = None) -> int:
        """See :meth:`Storage.reset_daily_counts`."""
        import sqlalchemy as sa

        a = self._schema.accounts
        statement = sa.update(a).where(a.c.sent_count > 0).values(sent_count=0)
        if owner is not None:
            statement = statement.where(a.c.owner == owner)
        with self._write("reset the daily counts") as conn:
            reset = conn.execute(statement).rowcount
        logger.info("reset the daily counts of %d accounts", reset)
        return reset

    def close(self) -> None:
        """Dispose of the engine's connection pool (unless the engine was
        passed in). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_engine:
            self._engine.dispose()
