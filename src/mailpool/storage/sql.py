"""SQLStorage: accounts in a SQL database, through SQLAlchemy Core.

Needs the ``sql`` extra (``pip install 'mailpool[sql]'``), and ``postgres`` for
PostgreSQL. SQLAlchemy is imported when a :class:`SQLStorage` is created, never
when :mod:`mailpool` is imported.

Tables (``SQLStorage.metadata`` holds them, e.g. for Alembic)::

    mailpool_accounts       one row per account: settings, secrets, usage counters
    mailpool_account_tags   (account_id, tag), with copies of the account's
                            ordering columns (see below)

Times are stored as seconds since the Unix epoch (double precision), so that the
minimum-wait, lease and daily-count checks are plain arithmetic on every
database. ``count_day`` is a ``DATE``: the day of the count in the account's
time zone; ``count_until`` is when that day ends there (the count reads 0 from
then on), written with the count, so that no query needs a time zone database.
``lease_until`` and ``count_until`` store "never" as ``0.0`` rather than
``NULL``, so that the indexes sort it first on every database.

How a claim stays cheap with 100,000 accounts: every account row carries a
random ``rank`` in [0, 1), and each strategy walks an index in its own order,
stopping at the first eligible rows (``LIMIT``): :attr:`Strategy.RANDOM` the
first :data:`_WINDOW` rows with ``rank >= r`` for a random ``r`` (wrapping
around to ``rank < r``), of which it takes one at random;
:attr:`Strategy.ROUND_ROBIN` the oldest ``lease_until``;
:attr:`Strategy.LEAST_USED` the lowest ``(count_until, sent_count)``. Every
index starts with ``status`` (and ``owner`` for an owner's scope). A tag's
scope walks the tags table instead, whose rows copy ``rank``,
``lease_until``, ``count_until`` and ``sent_count`` from their account in the
same transaction as every change of them, and are indexed by tag. A claim
gives its row a new random rank.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from datetime import time as day_time
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import SecretStr

from mailpool.encryption import PREFIX as ENCRYPTED_PREFIX
from mailpool.encryption import SecretBox, refuse_encrypted
from mailpool.errors import (
    AccountNotFound,
    ConfigurationError,
    MailpoolError,
    StorageError,
)
from mailpool.models import (
    Account,
    AccountStatus,
    Failure,
    OAuth2Credentials,
    SMTPSettings,
    zone_of,
)
from mailpool.storage.base import (
    CANDIDATE_SAMPLE,
    Claim,
    Lease,
    Strategy,
    duplicate_email,
    duplicate_id,
)

if TYPE_CHECKING:
    from sqlalchemy import (
        URL,
        ColumnElement,
        CompoundSelect,
        Connection,
        Engine,
        FromClause,
        MetaData,
        Select,
        Table,
        Update,
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
_ROUNDS = 5
"""Times the PostgreSQL claim starts its tries over while allowed rows remain."""
_PING_AFTER_IDLE = 5.0
"""Seconds after which a pooled connection is pinged before use (see
:func:`_ping_idle_connections`)."""
# Key of the PostgreSQL advisory lock that serializes CREATE TABLE between
# processes starting at the same time ("mailpool" in ASCII).
_DDL_LOCK_KEY = 0x6D61696C706F6F6C
_NEVER = 0.0
"""``lease_until`` of an account that was never claimed."""
_Lock = Literal["choose", "skip", "wait"]
_ATTEMPTS: tuple[_Lock, ...] = ("choose", "choose", "skip", "wait")
"""The tries of a PostgreSQL claim while the rows it picks are locked by
other claims (see :meth:`SQLStorage._claim_update`): a random claim first
chooses in its window and skips the chosen row if locked; then every claim
walks its index skipping locked rows; the last try waits for the locks."""
_WINDOW = 16
"""Allowed rows among which a random claim chooses (see
:meth:`SQLStorage._choice`)."""
_PORTABLE_ATTEMPTS = 16
"""Pick-then-update rounds of a claim on databases without ``RETURNING``."""
_INSERT_CHUNK = 5_000
"""Accounts per multi-row insert of :meth:`SQLStorage.add_many`."""
_BULK_SQLITE_CACHE = -65536
"""SQLite's page cache while :meth:`SQLStorage.add_many` inserts (64 MiB)."""
_ANALYZE_AFTER = 1_000
"""Accounts added at once after which PostgreSQL's statistics are refreshed
(``ANALYZE``)."""
_LOOKUP_CHUNK = 500
"""Ids or emails per ``IN (...)`` when looking for a duplicate."""
_COPIED = ("rank", "lease_until", "count_until", "sent_count")
"""The account columns that every tag row copies, for the tag indexes."""
_RANKS = random.Random()
"""Ranks of new accounts (claims take theirs from ``Claim.rng``)."""

T = TypeVar("T")


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
    # The case-folded email: unique, and the sort key of accounts().
    # PostgreSQL compares it with the "C" collation (code points, like
    # Python's sorted() and SQLite's BINARY), not the server's locale.
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
        sa.Column("max_in_flight", sa.Integer, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
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
        sa.Column("oauth2_client_id", sa.Text, nullable=True),
        sa.Column("oauth2_client_secret", sa.Text, nullable=True),
        sa.Column("oauth2_token_url", sa.Text, nullable=True),
        sa.Column("oauth2_scope", sa.Text, nullable=True),
        # Usage counters. Column order matters to databases that apply SET
        # clauses left to right (MySQL): a claim's new sent_count and
        # count_day read count_until, and its new in_flight reads
        # lease_until, before they are overwritten.
        sa.Column("sent_count", sa.Integer, nullable=False),
        sa.Column("count_day", _count_day_type(), nullable=True),
        # When count_day ends in the account's time zone: _NEVER without one.
        sa.Column("count_until", sa.Double, nullable=False),
        sa.Column("last_sent_at", sa.Double, nullable=True),
        sa.Column("in_flight", sa.Integer, nullable=False),
        sa.Column("lease_until", sa.Double, nullable=False),  # _NEVER: never
        # Random position in [0, 1): the order of random claims.
        sa.Column("rank", sa.Double, nullable=False),
        # Health (record_failure): a quota hold or cool-down ends at
        # paused_until (_NEVER: none); the failures in a row; the last error.
        # (Server defaults: a migration can add them to existing rows.)
        sa.Column("paused_until", sa.Double, nullable=False, server_default="0"),
        sa.Column("pause_kind", sa.String(16), nullable=True),
        sa.Column(
            "consecutive_failures", sa.Integer, nullable=False, server_default="0"
        ),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_error_at", sa.Double, nullable=True),
        sa.UniqueConstraint("email_key", name="uq_mailpool_accounts_email_key"),
        # One index per strategy, for all accounts and for one owner's.
        sa.Index("ix_mailpool_accounts_random", "status", "rank"),
        sa.Index("ix_mailpool_accounts_owner_random", "owner", "status", "rank"),
        sa.Index("ix_mailpool_accounts_turn", "status", "lease_until", "id"),
        sa.Index(
            "ix_mailpool_accounts_owner_turn", "owner", "status", "lease_until", "id"
        ),
        sa.Index(
            "ix_mailpool_accounts_usage", "status", "count_until", "sent_count", "rank"
        ),
        sa.Index(
            "ix_mailpool_accounts_owner_usage",
            "owner",
            "status",
            "count_until",
            "sent_count",
            "rank",
        ),
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
        # Copies of the account's columns (_COPIED), kept equal by every
        # statement that changes them, so that a tag's scope has its own
        # index for each strategy.
        sa.Column("rank", sa.Double, nullable=False),
        sa.Column("lease_until", sa.Double, nullable=False),
        sa.Column("count_until", sa.Double, nullable=False),
        sa.Column("sent_count", sa.Integer, nullable=False),
        sa.Index("ix_mailpool_account_tags_random", "tag", "rank"),
        sa.Index("ix_mailpool_account_tags_turn", "tag", "lease_until", "account_id"),
        sa.Index(
            "ix_mailpool_account_tags_usage",
            "tag",
            "count_until",
            "sent_count",
            "rank",
        ),
    )
    return _Schema(metadata, accounts, tags)


def _count_day_type() -> Any:
    """``DATE``, read on SQLite as the text stored (converted by
    :func:`_to_account`), so that a corrupt value is an error naming its
    account rather than SQLAlchemy's ``ValueError`` while fetching rows."""
    import sqlalchemy as sa

    class _StoredDate(sa.types.TypeDecorator[date]):
        impl = sa.Date
        cache_ok = True

        def result_processor(self, dialect: Any, coltype: Any) -> None:
            return None

    return sa.Date().with_variant(_StoredDate(), "sqlite")


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


def _epoch_or_never(value: datetime | None) -> float:
    """``lease_until`` or ``paused_until`` as stored: :data:`_NEVER` for
    never (which sorts first and compares without ``NULL``)."""
    stamp = _epoch(value)
    return _NEVER if stamp is None else stamp


def _from_epoch_or_never(value: float) -> datetime | None:
    """The stored ``lease_until`` or ``paused_until``; None for never."""
    return None if value == _NEVER else _from_epoch(value)


def _day_end(zone: str, day: date) -> float:
    """When ``day`` ends in the time zone ``zone`` (epoch seconds)."""
    midnight = datetime.combine(day + timedelta(days=1), day_time.min)
    return midnight.replace(tzinfo=zone_of(zone)).timestamp()


def _local_day(zone: str, now: float) -> date:
    """The date in ``zone`` at ``now`` (epoch seconds)."""
    return datetime.fromtimestamp(now, zone_of(zone)).date()


def _count_until(account: Account) -> float:
    """When the stored count of ``account`` ends: :data:`_NEVER` without one."""
    if account.count_day is None:
        return _NEVER
    return _day_end(account.timezone, account.count_day)


_NO_OAUTH2 = OAuth2Credentials()


def _secret(value: SecretStr | None, box: SecretBox | None = None) -> str | None:
    """A secret as stored: in clear, or encrypted by ``box``."""
    if value is None:
        return None
    secret = value.get_secret_value()
    return secret if box is None else box.encrypt(secret)


def _opened(stored: Any, box: SecretBox | None) -> Any:
    """A stored secret in clear (decrypted by ``box``).

    :raises ValueError: for an encrypted secret that ``box`` cannot decrypt,
        or any encrypted secret without ``box``.
    """
    if not isinstance(stored, str):
        return stored
    return box.decrypt(stored) if box is not None else refuse_encrypted(stored)


_SECRET_COLUMNS = (
    "smtp_password",
    "oauth2_access_token",
    "oauth2_refresh_token",
    "oauth2_client_secret",
)
"""The columns that hold secrets (encrypted with ``encryption=``)."""


def _settings_values(account: Account, box: SecretBox | None) -> dict[str, Any]:
    """The columns :meth:`SQLStorage.update` writes: everything but usage."""
    smtp = account.smtp
    oauth2 = account.oauth2 or _NO_OAUTH2
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
        "max_in_flight": account.max_in_flight,
        "timezone": account.timezone,
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_use_tls": smtp.use_tls,
        "smtp_use_ssl": smtp.use_ssl,
        "smtp_username": smtp.username,
        "smtp_password": _secret(smtp.password, box),
        "smtp_allow_insecure_auth": smtp.allow_insecure_auth,
        "has_oauth2": account.oauth2 is not None,
        "oauth2_access_token": _secret(oauth2.access_token, box),
        "oauth2_refresh_token": _secret(oauth2.refresh_token, box),
        "oauth2_token_expiry": _epoch(oauth2.token_expiry),
        "oauth2_client_id": oauth2.client_id,
        "oauth2_client_secret": _secret(oauth2.client_secret, box),
        "oauth2_token_url": oauth2.token_url,
        "oauth2_scope": oauth2.scope,
    }


def _account_row(
    account: Account, rank: float, box: SecretBox | None
) -> dict[str, Any]:
    """Every column of a new account's row."""
    return {
        "id": account.id,
        **_settings_values(account, box),
        "sent_count": account.sent_count,
        "count_day": account.count_day,
        "count_until": _count_until(account),
        "last_sent_at": _epoch(account.last_sent_at),
        "in_flight": account.in_flight,
        "lease_until": _epoch_or_never(account.lease_until),
        "rank": rank,
        **_health_values(account),
    }


def _health_values(account: Account) -> dict[str, Any]:
    """The health columns of ``account`` (what :meth:`SQLStorage.record_failure`
    writes, with the status)."""
    return {
        "paused_until": _epoch_or_never(account.paused_until),
        "pause_kind": None if account.pause_kind is None else account.pause_kind.value,
        "consecutive_failures": account.consecutive_failures,
        "last_error": account.last_error,
        "last_error_at": _epoch(account.last_error_at),
    }


def _tag_rows(
    account_id: str, tags: Iterable[str], row: Mapping[Any, Any]
) -> list[dict[str, Any]]:
    """The tags table's rows of an account whose row (or its copied columns)
    is ``row``."""
    copied = {name: row[name] for name in _COPIED}
    return [{"account_id": account_id, "tag": tag, **copied} for tag in sorted(tags)]


def _copy_type(type_: Any) -> str:
    """The PostgreSQL type name of a column, for a binary ``COPY``."""
    import sqlalchemy as sa

    for python_type, name in (
        (sa.Boolean, "bool"),
        (sa.Date, "date"),
        (sa.Integer, "int4"),
        (sa.Double, "float8"),
        (sa.String, "text"),
    ):
        if isinstance(type_, python_type):
            return name
    raise TypeError(f"no COPY type for {type_!r}")  # pragma: no cover


def _sqlite_value(value: Any) -> Any:
    """A value as the sqlite3 module stores it (dates as ISO text, as
    SQLAlchemy's SQLite dialect does)."""
    return value.isoformat() if isinstance(value, date) else value


def _register_functions(dbapi_connection: Any) -> None:
    """The SQLite functions of a claim's new day (see
    :meth:`SQLStorage._new_day`): the account's day at a moment, and when it
    ends, by Python's time zone database."""

    def local_day(zone: str, now: float) -> str:
        return _local_day(zone, now).isoformat()

    def day_end(zone: str, now: float) -> float:
        return _day_end(zone, _local_day(zone, now))

    dbapi_connection.create_function(
        "mailpool_local_day", 2, local_day, deterministic=True
    )
    dbapi_connection.create_function("mailpool_day_end", 2, day_end, deterministic=True)


def _column(row: Mapping[Any, Any], name: str, convert: Callable[[Any], T]) -> T:
    """``convert`` applied to the column ``name`` of ``row``.

    :raises ValueError: naming the column, for a value it cannot convert.
    """
    try:
        return convert(row[name])
    except (ArithmeticError, OSError):
        problem = "a time out of range"
    except TypeError:
        problem = "not a number"
    except ValueError:
        problem = "malformed"
    raise ValueError(f"{name}: {problem}")


def _problem(exc: BaseException) -> str:
    """What is wrong with a stored row, from the error that converting it
    raised: the messages of mailpool's own errors (they name the field and
    show no secret), short; only the class of any other error (whose
    arguments might hold a value)."""
    if isinstance(exc, ValueError) and not isinstance(exc, UnicodeError):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return "; ".join(lines[:3])[:300] or type(exc).__name__
    return f"a value of the wrong type or size ({type(exc).__name__})"


def _check_lengths(account: Account) -> None:
    for what, value in [("owner", account.owner), *(("tag", t) for t in account.tags)]:
        if value is not None and len(value) > _MAX_NAME:
            raise ConfigurationError(
                f"SQLStorage keeps an account's {what} in {_MAX_NAME} characters: "
                f"shorten {value[:40]!r}..."
            )


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _to_account(
    row: RowMapping, tags: Iterable[str], box: SecretBox | None = None
) -> Account:
    oauth2 = None
    if row["has_oauth2"]:
        oauth2 = OAuth2Credentials(
            access_token=_opened(row["oauth2_access_token"], box),
            refresh_token=_opened(row["oauth2_refresh_token"], box),
            token_expiry=_column(row, "oauth2_token_expiry", _from_epoch),
            client_id=row["oauth2_client_id"],
            client_secret=_opened(row["oauth2_client_secret"], box),
            token_url=row["oauth2_token_url"],
            scope=row["oauth2_scope"],
        )
    count_day = row["count_day"]
    if isinstance(count_day, str):  # SQLite, or a driver without date conversion
        count_day = _column(row, "count_day", date.fromisoformat)
    elif count_day is not None and not isinstance(count_day, date):
        raise ValueError("count_day: not a date")
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
        max_in_flight=row["max_in_flight"],
        timezone=row["timezone"],
        smtp=SMTPSettings(
            host=row["smtp_host"],
            port=row["smtp_port"],
            use_tls=bool(row["smtp_use_tls"]),
            use_ssl=bool(row["smtp_use_ssl"]),
            username=row["smtp_username"],
            password=_opened(row["smtp_password"], box),
            allow_insecure_auth=bool(row["smtp_allow_insecure_auth"]),
        ),
        oauth2=oauth2,
        sent_count=row["sent_count"],
        count_day=count_day,
        last_sent_at=_column(row, "last_sent_at", _from_epoch),
        in_flight=row["in_flight"],
        lease_until=_column(row, "lease_until", _from_epoch_or_never),
        paused_until=_column(row, "paused_until", _from_epoch_or_never),
        pause_kind=row["pause_kind"],
        consecutive_failures=row["consecutive_failures"],
        last_error=row["last_error"],
        last_error_at=_column(row, "last_error_at", _from_epoch),
    )


# -------------------------------------------------------------------- engine


def _is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


_SECRET_QUERY_WORDS = ("password", "passwd", "pwd", "secret", "token")
"""URL query parameters whose value is a secret (``password``,
``sslpassword``, ...): never shown, and moved out of the engine's URL."""
_HIDDEN = "***"


def _is_secret_key(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_QUERY_WORDS)


def _redacted(url: URL) -> str:
    """``url`` as mailpool shows it: without its password, and with
    ``***`` for every secret query parameter."""
    query = {k: _HIDDEN if _is_secret_key(k) else v for k, v in url.query.items()}
    shown = url.set(query=query).render_as_string(hide_password=True)
    return shown.replace("=%2A%2A%2A", f"={_HIDDEN}")


def _url_secrets(url: URL) -> list[str]:
    """The secrets in ``url``: its password and its secret query values."""
    found = [url.password] if isinstance(url.password, str) else []
    for key, value in url.query.items():
        if _is_secret_key(key):
            found.extend([value] if isinstance(value, str) else value)
    return sorted({s for s in found if s}, key=len, reverse=True)


def _create_engine(url: str | URL, options: Mapping[str, Any]) -> Engine:
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        # Echo no part of an unparsable URL but its scheme: where the
        # password starts is exactly what could not be parsed.
        scheme, sep, _ = str(url).partition("://")
        shown = f"the {scheme!r} URL" if sep and scheme.isprintable() else "the URL"
        raise ConfigurationError(
            f"{shown} is not a valid database URL: use e.g. sqlite:///app.db or "
            "postgresql+psycopg://user:password@host/db (quote special "
            "characters in the password with urllib.parse.quote_plus)"
        ) from None  # the parser's error quotes the whole URL
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
    shown = _redacted(parsed)

    kwargs: dict[str, Any] = {"hide_parameters": True}
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() != "sqlite":
        # A password in the query string (?password=..., ?sslpassword=...)
        # goes to the driver as a connect argument, as the dialect would pass
        # it, so that the engine's URL (and every repr of it) holds none.
        secret = [k for k, v in parsed.query.items() if _is_secret_key(k)]
        for key in secret:
            value = parsed.query[key]
            connect_args[key] = value if isinstance(value, str) else value[-1]
        parsed = parsed.difference_update_query(secret)
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
        memory = _is_sqlite_memory(parsed)
        if not memory:
            _create_owner_only(parsed)
        _configure_sqlite(engine, memory=memory)
    elif not options.get("pool_pre_ping"):
        _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection at checkout only when it sat idle for
    :data:`_PING_AFTER_IDLE` seconds, rather than before every use
    (``pool_pre_ping``, a round trip more per statement on the send path).

    A connection that went stale (server restart, idle timeout of a proxy)
    is found and replaced before anything is sent on it, so no statement is
    ever retried, nor a claim applied twice. A connection that breaks within
    :data:`_PING_AFTER_IDLE` seconds of its last use makes the next
    operation raise :class:`StorageError` (SQLAlchemy then discards it, and
    the operation after that gets a new one)."""
    from sqlalchemy import event
    from sqlalchemy.exc import DisconnectionError

    errors = engine.dialect.loaded_dbapi.Error

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["mailpool_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("mailpool_idle_since", None)
        if since is None or time.monotonic() - since < _PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
            dbapi_connection.rollback()  # end the ping's implicit transaction
        except errors as exc:
            logger.debug("replacing a stale database connection")
            raise DisconnectionError(type(exc).__name__) from None


def _create_owner_only(url: URL) -> None:
    """Create a new SQLite file owner-only (0600) before SQLite does (which
    would follow the umask, usually world-readable): the database holds
    passwords. SQLite gives its ``-wal``, ``-shm`` and ``-journal`` files the
    permissions of the database file. An existing file keeps its own; a
    ``file:`` URI (``?uri=true``) is left to SQLite."""
    database = url.database
    if not database or database.startswith("file:") or "uri" in url.query:
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # it exists, or SQLite will report why it cannot be opened
        return
    os.close(fd)
    logger.debug("created the SQLite file %s (owner-only)", database)


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

_ClaimStyle = Literal["cte", "returning", "portable"]


def _claim_style(engine: Engine) -> _ClaimStyle:
    """How this database claims in one statement.

    - ``cte`` (PostgreSQL): one statement updates the account row and its tag
      rows (data-modifying CTEs), skipping rows other claims have locked.
    - ``returning`` (SQLite 3.35 and later): ``UPDATE ... RETURNING`` of the
      account row; its tag rows follow in the same transaction.
    - ``portable`` (any other database): select a candidate, then update it
      by id if it is still eligible; pick again when another worker won.
    """
    dialect = engine.dialect
    if dialect.name == "postgresql":
        return "cte"
    if dialect.name == "sqlite":
        version = getattr(dialect.loaded_dbapi, "sqlite_version_info", (0, 0, 0))
        if tuple(version) >= (3, 35, 0):
            return "returning"
    return "portable"


def _param(name: str, type_: Any = None) -> ColumnElement[Any]:
    """The bound parameter ``name`` of the prebuilt statements (named
    ``p_...``: an UPDATE would take a parameter named like a column as a
    value to SET)."""
    import sqlalchemy as sa

    return sa.bindparam(f"p_{name}", type_=type_)


def _now() -> ColumnElement[float]:
    import sqlalchemy as sa

    return _param("now", sa.Double())


def _day() -> ColumnElement[date]:
    import sqlalchemy as sa

    return _param("day", sa.Date())


# Constants written into the statements rather than bound: shorter SQL (the
# psycopg driver caches the conversion of statements up to 4 KB only).


def _ZERO() -> ColumnElement[int]:
    import sqlalchemy as sa

    return sa.literal_column("0", sa.Integer())


def _ONE() -> ColumnElement[int]:
    import sqlalchemy as sa

    return sa.literal_column("1", sa.Integer())


def _ACTIVE() -> ColumnElement[str]:
    import sqlalchemy as sa

    return sa.literal_column(f"'{AccountStatus.ACTIVE.value}'", sa.String())


@dataclass(frozen=True)
class _Shape:
    """What the statements of a claim depend on besides their parameters:
    each shape's statements are built once per storage and reused."""

    strategy: Strategy
    account_id: bool
    owner: bool
    tag: bool
    account_ids: bool
    exclude: bool

    @classmethod
    def of(cls, claim: Claim, strategy: Strategy | None = None) -> _Shape:
        scope = claim.scope
        named = claim.account_id is not None
        return cls(
            # A claim that names its account picks nothing.
            strategy=Strategy.RANDOM if named else (strategy or claim.strategy),
            account_id=named,
            owner=scope.owner is not None,
            tag=scope.tag is not None,
            account_ids=scope.account_ids is not None,
            exclude=bool(claim.exclude),
        )

    def params(self, claim: Claim, *, claiming: bool = True) -> dict[str, Any]:
        """The parameters of ``claim`` for this shape's statements: with
        ``claiming``, those of the claim's update too (its lease, and a new
        random rank for the claimed row); the random starting rank of a
        random pick. Random numbers come from ``claim.rng``."""
        scope = claim.scope
        params: dict[str, Any] = {"p_now": _epoch(claim.now)}
        if self.strategy is Strategy.RANDOM:
            params["p_r"] = claim.rng.random()
            if claiming and not self.account_id:
                params["p_u"] = claim.rng.random()
        if claiming:
            params["p_until"] = _epoch(claim.lease_until())
            params["p_new_rank"] = claim.rng.random()
        if scope.owner is not None:
            params["p_owner"] = scope.owner
        if scope.tag is not None:
            params["p_tag"] = scope.tag
        if scope.account_ids is not None:
            params["p_account_ids"] = sorted(scope.account_ids)
        if claim.exclude:
            params["p_exclude"] = sorted(claim.exclude)
        if claim.account_id is not None:
            params["p_account_id"] = claim.account_id
        return params


@dataclass(frozen=True)
class _Walk:
    """The rows a pick walks through, and their ordering columns: the
    accounts table, or one tag's rows of the tags table joined to it."""

    id: ColumnElement[Any]
    source: FromClause
    locked: FromClause
    where: list[ColumnElement[bool]]
    rank: ColumnElement[Any]
    lease_until: ColumnElement[Any]
    count_until: ColumnElement[Any]
    sent_count: ColumnElement[Any]

    def branches(
        self, strategy: Strategy
    ) -> list[tuple[list[ColumnElement[bool]], list[ColumnElement[Any]]]]:
        """(conditions, order) of each index range a pick tries, in turn."""
        import sqlalchemy as sa

        if strategy is Strategy.ROUND_ROBIN:
            return [([], [self.lease_until, self.id])]
        if strategy is Strategy.LEAST_USED:
            # Counts that have ended (no sends today) first.
            return [([], [self.count_until, self.sent_count, self.rank])]
        r = _param("r", sa.Double())
        return [([self.rank >= r], [self.rank]), ([self.rank < r], [self.rank])]


class SQLStorage:
    """Accounts in SQLite, PostgreSQL or another SQLAlchemy database.

    Share one database between threads, processes and machines: a claim is a
    single conditional ``UPDATE`` that picks the account and re-checks its
    eligibility on the row it changes, so no daily limit, minimum wait or
    ``max_in_flight`` is ever exceeded. Use PostgreSQL when several machines
    send.

    The strategies run in the database, each walking an index (see the module
    documentation), so a claim costs about the same for 10 accounts in scope as
    for 100,000:

    - :attr:`~mailpool.storage.Strategy.RANDOM`: one of the first 16
      eligible rows at or after a random rank (wrapping around), each as
      likely; the claimed row gets a new random rank. With 16 eligible
      accounts or fewer the choice is exactly uniform; with more, nearly so
      (a chi-square test over thousands of claims cannot tell).
    - :attr:`~mailpool.storage.Strategy.ROUND_ROBIN`: the oldest
      ``lease_until`` (never claimed first), ties by id; the rotation lives in
      the rows, so every process sharing the database takes part in it.
    - :attr:`~mailpool.storage.Strategy.LEAST_USED`: the fewest sends today.
      Ties are broken by the random rank, not by id. Accounts whose count has
      ended come first; the others are ordered by when their day ends, then
      by their count: exact among accounts of one time zone, while across
      time zones an account whose day ends sooner comes before one with
      fewer sends whose day ends later.

    A walk skips the rows that are not eligible, so a claim slows down when
    most accounts in scope are not (e.g. most of them at their daily limit).
    On PostgreSQL, concurrent claims do not queue behind each other: the pick
    skips rows that another claim has locked (``FOR UPDATE SKIP LOCKED``) and
    tries again, waiting for the lock only as a last resort, so ``None`` means
    that no account was eligible.

    :param url: a SQLAlchemy URL (``sqlite:///app.db``,
        ``postgresql+psycopg://user:password@host/db``), or an
        :class:`sqlalchemy.engine.Engine` you configured (it is not disposed by
        :meth:`close`).
    :param engine_options: keyword arguments for
        :func:`sqlalchemy.create_engine` (e.g. ``pool_size``), merged over
        mailpool's defaults (``hide_parameters=True``, a 30 s busy timeout on
        SQLite; on other databases a pooled connection is pinged before use
        only after 5 s idle, unless you pass ``pool_pre_ping=True``).
    :param create_tables: create the tables on first use when they are
        missing; pass ``False`` when your own migrations create them from
        :attr:`metadata`.
    :param encryption: a :class:`~mailpool.encryption.SecretBox` to keep
        passwords, tokens and client secrets encrypted in the database
        (``fernet:`` tokens; the rest stays readable). A database with
        encrypted secrets opened without the key, or with a wrong one, raises
        :class:`~mailpool.StorageError` on first use and changes nothing.
    :raises ConfigurationError: if SQLAlchemy or the database driver is not
        installed, or the URL is malformed.

    Each account counts on the day of its own time zone: the count's end
    (``count_until``) is stored with it, and the day a claim starts is
    computed by PostgreSQL's time zone database, by Python's on SQLite
    (functions given to each connection), and in Python on other databases.

    Without ``encryption`` the database holds SMTP passwords and OAuth2
    tokens as plain text: protect it (and its backups) like any credential
    store. A new SQLite file (and its ``-wal`` / ``-shm`` files) is created
    owner-only (0600). Passwords in the URL (also ``?password=`` and other
    secret query parameters) are shown as ``***`` in ``repr``, errors and
    logs, and passed to the driver outside the engine's URL.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       Claims, leases and the ``rank`` / ``in_flight`` / ``lease_until``
       columns; the old ``reserve`` / ``eligible`` methods are gone;
       ``encryption``; :meth:`save_oauth2_tokens`; no ``pool_pre_ping`` by
       default.
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
        encryption: SecretBox | None = None,
    ) -> None:
        _require_sqlalchemy()
        import sqlalchemy as sa

        self._schema = _get_schema()
        self._box = encryption
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
        self._location = _redacted(self._engine.url)
        self._secrets = _url_secrets(self._engine.url)
        if self._owns_engine:
            given = dict((engine_options or {}).get("connect_args", {}))
            self._secrets = sorted(
                {
                    *self._secrets,
                    *_url_secrets(sa.make_url(url)),  # type: ignore[arg-type]
                    *(v for k, v in given.items() if _is_secret_key(k) and v),
                },
                key=len,
                reverse=True,
            )
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
        # One statement is atomic by itself: on PostgreSQL the send path's
        # single-statement writes run without BEGIN and COMMIT, which would
        # cost two more round trips each.
        self._single: Engine = (
            self._engine.execution_options(isolation_level="AUTOCOMMIT")
            if self._engine.dialect.name == "postgresql"
            else self._writer
        )
        # An in-memory SQLite database lives in one shared connection: take
        # turns. Everything else gets a pooled connection per call.
        self._serial: AbstractContextManager[Any] = (
            threading.RLock() if _is_sqlite_memory(self._engine.url) else nullcontext()
        )
        self._claim_style = _claim_style(self._engine)
        self._statements: dict[tuple[Any, ...], Any] = {}

    def __repr__(self) -> str:
        return f"<SQLStorage {self._location}>"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (its URL renders without the password)."""
        return self._engine

    # ------------------------------------------------------------ plumbing

    @contextmanager
    def _map_errors(
        self, action: str, *, duplicates: Sequence[Account] = (), new: bool = False
    ) -> Iterator[None]:
        """Turn driver errors into StorageError (the one place that does).

        With ``duplicates``, an integrity error that a stored account explains
        becomes a ConfigurationError naming the clash (``new``: the id too).
        """
        try:
            yield
            return
        except MailpoolError:
            raise
        except self._errors as exc:
            error = self._translate(exc, action, duplicates, new)
        # Raised outside the except clause, so that no frame of the
        # traceback holds the driver's error (nor the row in its parameters);
        # the context (the error being handled by the caller's ``with``) is
        # dropped, and a bare ``raise`` does not set it again.
        try:
            raise error
        except MailpoolError:
            error.__context__ = None
            raise

    def _translate(
        self,
        exc: BaseException,
        action: str,
        duplicates: Sequence[Account],
        new: bool,
    ) -> MailpoolError:
        """The MailpoolError for the driver error ``exc``: caused by a bare
        copy of the driver's message (no parameters, traceback or context)."""
        from sqlalchemy.exc import IntegrityError

        cause = self._bare(exc)
        integrity = (IntegrityError, self._engine.dialect.loaded_dbapi.IntegrityError)
        error: MailpoolError | None = None
        if duplicates and isinstance(exc, integrity):
            error = self._find_clash(duplicates, new=new)
        if error is None:
            message = f"could not {action} in {self._location}: {cause}"
            logger.debug("%s", message)
            error = StorageError(message, location=self._location)
        error.__cause__ = cause
        error.__suppress_context__ = True
        return error

    def _bare(self, exc: BaseException) -> BaseException:
        """The driver's error as a new exception of its class (or a plain
        Exception), holding only :meth:`_describe`'s text."""
        cause = getattr(exc, "orig", None)
        original = cause if isinstance(cause, BaseException) else exc
        text = self._describe(exc)
        try:
            bare = type(original)(text)
        except Exception:  # an exception class with another signature
            bare = Exception(text)
        if str(bare) != text:  # a class that renders its arguments its own way
            bare = Exception(text)
        return bare

    def _describe(self, exc: BaseException) -> str:
        """The driver's own first line, without parameters or password."""
        cause = getattr(exc, "orig", None)
        error = cause if isinstance(cause, BaseException) else exc
        lines = str(error).strip().splitlines()
        text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        for secret in self._secrets:
            text = text.replace(secret, _HIDDEN)
        return text

    def _find_clash(
        self, accounts: Sequence[Account], *, new: bool
    ) -> ConfigurationError | None:
        """The first of ``accounts`` whose id (``new``) or email a stored
        account already has, as the error to raise; None when there is none."""
        import sqlalchemy as sa

        a = self._schema.accounts
        try:
            with self._engine.connect() as conn:
                if new:
                    for chunk in _chunks([x.id for x in accounts], _LOOKUP_CHUNK):
                        stored = set(
                            conn.execute(
                                sa.select(a.c.id).where(a.c.id.in_(chunk))
                            ).scalars()
                        )
                        for account_id in chunk:
                            if account_id in stored:
                                return duplicate_id(account_id)
                for batch in _chunks(accounts, _LOOKUP_CHUNK):
                    keys = sorted({x.email.casefold() for x in batch})
                    rows = conn.execute(
                        sa.select(a.c.email_key, a.c.id).where(a.c.email_key.in_(keys))
                    )
                    owners = {key: account_id for key, account_id in rows}
                    for account in batch:
                        other = owners.get(account.email.casefold())
                        if other is not None and other != account.id:
                            return duplicate_email(account.email, other)
        except self._errors:
            return None
        return None

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        with self._serial, self._map_errors(action):
            self._ensure_tables()
            with self._engine.connect() as conn:
                self._prepare(conn)
                yield conn

    @contextmanager
    def _write(
        self,
        action: str,
        *,
        duplicates: Sequence[Account] = (),
        new: bool = False,
        single: bool = False,
    ) -> Iterator[Connection]:
        """A write transaction; ``single``: for one statement, which needs
        none on PostgreSQL."""
        engine = self._single if single else self._writer
        with self._serial, self._map_errors(action, duplicates=duplicates, new=new):
            self._ensure_tables()
            with engine.begin() as conn:
                self._prepare(conn)
                yield conn

    def _prepare(self, conn: Connection) -> None:
        """Give a SQLite connection the functions of :meth:`_new_day`, once
        (also on connections of an engine passed in)."""
        if self._claim_style == "returning":
            info = conn.connection.info
            if "mailpool_functions" not in info:
                _register_functions(conn.connection.dbapi_connection)
                info["mailpool_functions"] = True

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
                    inspector = sa.inspect(conn)  # it cached what was missing
                self._check_columns(inspector)
                self._check_key(conn)
            self._ready = True

    def _check_columns(self, inspector: Any) -> None:
        """Refuse tables that lack columns of this version (created by an
        earlier one), before any statement fails on them."""
        for table in (self._schema.accounts, self._schema.tags):
            found = {column["name"] for column in inspector.get_columns(table.name)}
            missing = [c.name for c in table.columns if c.name not in found]
            if missing:
                raise StorageError(
                    f"the table {table.name} in {self._location} lacks the "
                    f"column(s) {', '.join(missing)}: it was created by an "
                    "earlier mailpool version; add them with a migration (see "
                    "'Upgrading' in docs/storage.md)",
                    location=self._location,
                )

    def _check_key(self, conn: Connection) -> None:
        """Refuse a database whose encrypted secrets this storage cannot
        decrypt (no key, or a wrong one) before anything is read or written:
        one encrypted value, if any, must decrypt."""
        import sqlalchemy as sa

        a = self._schema.accounts
        columns = [a.c[name] for name in _SECRET_COLUMNS]
        found = conn.execute(
            sa.select(a.c.id, *columns)
            .where(sa.or_(*(c.startswith(ENCRYPTED_PREFIX) for c in columns)))
            .limit(1)
        ).first()
        if found is None:
            return
        account_id, *values = found
        try:
            for value in values:
                _opened(value, self._box)
        except ValueError as exc:
            problem = str(exc)
        else:
            return
        raise StorageError(
            f"cannot use {self._location}: account {account_id!r}: "
            f"{problem.removeprefix('it ')}",
            location=self._location,
        )

    # ------------------------------------------------------------- queries

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
            found.append((first, self._account_of(first, tags)))
        return found

    def _account_of(self, row: RowMapping, tags: Iterable[str]) -> Account:
        """The account of a stored row; StorageError naming the account and
        the problem when it is invalid (a corrupt row, a wrong key)."""
        try:
            return _to_account(row, tags, self._box)
        except (ArithmeticError, LookupError, TypeError, ValueError, OSError) as exc:
            problem = _problem(exc)
        raise StorageError(
            f"account {row['id']!r} in {self._location} is invalid: {problem}",
            location=self._location,
        )

    def _accounts_where(
        self, conn: Connection, *where: ColumnElement[bool]
    ) -> list[Account]:
        return [account for _, account in self._query(conn, *where)]

    def _scope_filters(
        self,
        owner: Any = None,
        tag: Any = None,
        account_ids: Any = None,
        accounts: FromClause | None = None,
    ) -> list[ColumnElement[bool]]:
        """The scope in SQL, on the accounts table (or an alias of it): each
        filter given (a value or a bound parameter) must match."""
        import sqlalchemy as sa

        a = self._schema.accounts if accounts is None else accounts
        where: list[ColumnElement[bool]] = []
        if owner is not None:
            where.append(a.c.owner == owner)
        if tag is not None:
            tagged = self._schema.tags.alias("scope_tags")
            where.append(
                sa.exists().where(tagged.c.account_id == a.c.id, tagged.c.tag == tag)
            )
        if account_ids is not None:
            where.append(a.c.id.in_(account_ids))
        return where

    def _eligible(self, a: FromClause) -> list[ColumnElement[bool]]:
        """:meth:`Account.is_eligible` in SQL, at the parameter ``p_now``:
        active, under the daily limit (a count whose day has ended in the
        account's time zone reads 0), the wait since the last delivery
        elapsed, a send slot free (or every lease run out) and no pause (of
        :meth:`record_failure`) running.

        The minimum-wait condition is immune to clock skew between processes:
        a ``min_wait_time`` of 0 never refuses (a stamp "from the future" left
        by a process whose clock runs ahead cannot block anyone), and a
        positive wait compares the caller's ``now`` with the stored stamp,
        which :meth:`complete` keeps monotonic. A positive wait is then at most
        off by the skew between the clocks (keep them NTP-synchronized); the
        daily limit and ``max_in_flight`` never are.
        """
        import sqlalchemy as sa

        sent_today = sa.case((a.c.count_until > _now(), a.c.sent_count), else_=_ZERO())
        return [
            a.c.status == _ACTIVE(),
            sent_today < a.c.daily_limit,
            sa.or_(
                a.c.min_wait_time <= _ZERO(),
                a.c.last_sent_at.is_(None),
                a.c.last_sent_at <= _now() - a.c.min_wait_time,
            ),
            sa.or_(a.c.in_flight < a.c.max_in_flight, a.c.lease_until <= _now()),
            a.c.paused_until <= _now(),
        ]

    def _allowed(
        self, shape: _Shape, a: FromClause, *, tag: bool = True
    ) -> list[ColumnElement[bool]]:
        """:meth:`Claim.allows` in SQL (without the tag when ``tag`` is false:
        a walk of the tag's rows filters it itself)."""
        import sqlalchemy as sa

        where = [
            *self._scope_filters(
                _param("owner") if shape.owner else None,
                _param("tag") if shape.tag and tag else None,
                sa.bindparam("p_account_ids", expanding=True)
                if shape.account_ids
                else None,
                a,
            ),
            *self._eligible(a),
        ]
        if shape.exclude:
            where.append(a.c.id.not_in(sa.bindparam("p_exclude", expanding=True)))
        if shape.account_id:
            where.append(a.c.id == _param("account_id"))
        return where

    def _walk(self, shape: _Shape) -> _Walk:
        """The index a pick walks: the tag's rows in the tags table, or the
        accounts table (where the planner takes the owner's index when the
        scope has an owner)."""
        candidate = self._schema.accounts.alias("c")
        if not shape.tag:
            c = candidate.c
            return _Walk(
                id=c.id,
                source=candidate,
                locked=candidate,
                where=self._allowed(shape, candidate),
                rank=c.rank,
                lease_until=c.lease_until,
                count_until=c.count_until,
                sent_count=c.sent_count,
            )
        t = self._schema.tags
        return _Walk(
            id=t.c.account_id,
            source=t.join(candidate, candidate.c.id == t.c.account_id),
            locked=candidate,
            where=[
                t.c.tag == _param("tag"),
                *self._allowed(shape, candidate, tag=False),
            ],
            rank=t.c.rank,
            lease_until=t.c.lease_until,
            count_until=t.c.count_until,
            sent_count=t.c.sent_count,
        )

    def _pick(
        self,
        shape: _Shape,
        *,
        limit: int | ColumnElement[int] = 1,
        lock: Literal["skip", "wait"] | None = None,
    ) -> Select[Any] | CompoundSelect[Any]:
        """The ids of the first ``limit`` rows allowed by ``shape`` in the
        order of its strategy: each branch is one ordered index range with its
        own ``LIMIT``, and a later branch runs only when the earlier ones
        found too few. ``lock`` (PostgreSQL) locks the picked account row,
        skipping rows locked by others (``skip``) or waiting for them
        (``wait``)."""
        import sqlalchemy as sa

        walk = self._walk(shape)
        if isinstance(limit, int):
            limit = sa.literal_column(str(limit), sa.Integer())
        selects = []
        for conditions, order in walk.branches(shape.strategy):
            select = (
                sa.select(walk.id.label("id"))
                .select_from(walk.source)
                .where(*walk.where, *conditions)
                .order_by(*order)
                .limit(limit)
            )
            if lock is not None:
                select = select.with_for_update(
                    skip_locked=lock == "skip", of=walk.locked
                )
            selects.append(select)
        if len(selects) == 1:
            return selects[0]
        return sa.union_all(
            *(sa.select(select.subquery().c.id) for select in selects)
        ).limit(limit)

    def _choice(self, shape: _Shape) -> Select[Any]:
        """A random claim's pick: one of the first :data:`_WINDOW` allowed
        rows at or after the random rank ``p_r`` (wrapping around), each as
        likely as the others (by the random number ``p_u``).

        Taking the first row after a random rank alone would favour the rows
        after the widest gaps between ranks (the claimed row's new rank only
        evens that out over many claims); a uniform choice in a window of
        rows spreads that bias over the window, and there is none at all when
        the window holds every allowed row."""
        import sqlalchemy as sa

        window = self._pick(shape, limit=_WINDOW).subquery("w")
        numbered = sa.select(
            window.c.id,
            sa.func.row_number().over().label("n"),
            sa.func.count().over().label("m"),
        ).subquery("x")
        u = _param("u", sa.Double())
        spot = u * numbered.c.m
        return sa.select(numbered.c.id).where(
            numbered.c.n - _ONE() <= spot, spot < numbered.c.n
        )

    def _claim_update(self, shape: _Shape, lock: _Lock | None = None) -> Update:
        """The conditional ``UPDATE`` of a claim: on the row the strategy
        picks (or the one the claim names), if the claim still allows it, the
        rule of :meth:`Account.with_claim`, and a new random rank.

        ``lock`` (PostgreSQL): ``choose`` is the random choice of
        :meth:`_choice`, given up if another claim has locked the chosen row
        (other strategies: ``skip``); ``skip`` walks the index to the first
        allowed row that no other claim has locked; ``wait`` walks to the
        first allowed row, waiting for its lock (and walks on if it is no
        longer allowed then). The walks of a random claim take the first row
        after the random rank, without the window of :meth:`_choice`."""
        import sqlalchemy as sa

        # PostgreSQL's (lock) statement names the row "a": shorter SQL, which
        # psycopg caches (see _claim_cte).
        a: Any = self._schema.accounts.alias("a") if lock else self._schema.accounts
        target: list[ColumnElement[bool]] = []
        if shape.account_id:
            pass
        elif shape.strategy is Strategy.RANDOM and lock in (None, "choose"):
            choice = self._choice(shape).scalar_subquery()
            if lock == "choose":
                # Lock only the chosen row; a locked one is skipped (and the
                # claim tries again).
                chosen = a.alias("chosen")
                choice = (
                    sa.select(chosen.c.id)
                    .where(chosen.c.id == choice)
                    .with_for_update(skip_locked=True)
                    .scalar_subquery()
                )
            target.append(a.c.id == choice)
        else:
            walk: Literal["skip", "wait"] | None = None
            if lock is not None:
                walk = "wait" if lock == "wait" else "skip"
            target.append(a.c.id == self._pick(shape, lock=walk).scalar_subquery())
        until = _param("until", sa.Double())
        counting = a.c.count_until > _now()  # the count is today's (or later)
        local_day, day_end = self._new_day(a)
        return (
            sa.update(a)
            .where(*target, *self._allowed(shape, a))
            .values(
                sent_count=sa.case((counting, a.c.sent_count + _ONE()), else_=_ONE()),
                count_day=sa.case((counting, a.c.count_day), else_=local_day),
                count_until=sa.case((counting, a.c.count_until), else_=day_end),
                in_flight=sa.case(
                    (a.c.lease_until <= _now(), _ZERO()), else_=a.c.in_flight
                )
                + _ONE(),
                lease_until=sa.case(
                    (a.c.lease_until > until, a.c.lease_until), else_=until
                ),
                rank=_param("new_rank", sa.Double()),
            )
        )

    def _new_day(
        self, a: FromClause
    ) -> tuple[ColumnElement[date], ColumnElement[float]]:
        """The day in the account's time zone at ``p_now``, and when it ends
        there: what a claim counts on once the stored count has ended.

        PostgreSQL converts with its own time zone database; SQLite calls
        the functions :func:`_register_functions` gives each connection
        (Python's); other databases get both from Python, for the account
        the claim picked (``p_local_day``, ``p_day_end``)."""
        import sqlalchemy as sa

        name = self._engine.dialect.name
        if name == "postgresql":
            local = sa.func.timezone(a.c.timezone, sa.func.to_timestamp(_now()))
            day = sa.cast(local, sa.Date)
            midnight = sa.cast(day + _ONE(), sa.DateTime)
            end = sa.func.extract("epoch", sa.func.timezone(a.c.timezone, midnight))
            return day, sa.cast(end, sa.Double)
        if self._claim_style == "returning":
            return (
                sa.func.mailpool_local_day(a.c.timezone, _now(), type_=sa.Date),
                sa.func.mailpool_day_end(a.c.timezone, _now(), type_=sa.Double),
            )
        return _param("local_day", sa.Date()), _param("day_end", sa.Double())

    def _cached(self, key: tuple[Any, ...], build: Callable[[], T]) -> T:
        """The statement ``key`` names, built once: SQLAlchemy then reuses its
        compiled form, so a claim costs little Python."""
        try:
            return self._statements[key]  # type: ignore[no-any-return]
        except KeyError:
            statement = self._statements[key] = build()
            return statement

    def _claim_statement(self, shape: _Shape, lock: _Lock | None = None) -> Any:
        """The claim's statement for this database (see :meth:`claim`)."""
        if self._claim_style == "cte":
            assert lock is not None
            return self._cached(
                ("claim", shape, lock), lambda: self._claim_cte(shape, lock)
            )
        if self._claim_style == "returning":
            a = self._schema.accounts
            return self._cached(
                ("claim", shape),
                lambda: self._claim_update(shape).returning(*a.c),
            )
        return self._cached(("claim", shape), lambda: self._claim_by_id(shape))

    def _claim_cte(self, shape: _Shape, lock: _Lock) -> Select[Any]:
        """PostgreSQL's claim, one statement: pick (``lock``) and update the
        account row, copy its ordering columns to its tag rows, and return the
        account with one row per tag (no row when nothing was claimed).

        The statement stays under 4 KB, the longest that psycopg caches its
        conversion of (``SELECT *``, constants written in the SQL, the row
        named ``a``); a test checks it for the common scopes."""
        import sqlalchemy as sa

        t = self._schema.tags
        update = self._claim_update(shape, lock)
        claimed = update.returning(*update.table.c).cte("claimed")
        synced = (
            sa.update(t)
            .where(t.c.account_id == claimed.c.id)
            .values({name: claimed.c[name] for name in _COPIED})
            .returning(t.c.tag)
            .cte("synced")
        )
        return sa.select(sa.literal_column("*")).select_from(
            claimed.outerjoin(synced, sa.true())
        )

    def _claim_by_id(self, shape: _Shape) -> Update:
        """The portable claim's ``UPDATE`` of the row picked before (if its
        time zone, which gave ``p_local_day`` and ``p_day_end``, is still
        the one read)."""
        a = self._schema.accounts
        update = self._claim_update(dataclasses.replace(shape, account_id=True))
        return update.where(a.c.timezone == _param("timezone"))

    def _tags_synced(self, *, returning: bool) -> Update:
        """Copy a claimed account's ordering columns to its tag rows."""
        import sqlalchemy as sa

        t = self._schema.tags
        types = {
            "rank": sa.Double(),
            "lease_until": sa.Double(),
            "count_until": sa.Double(),
            "sent_count": sa.Integer(),
        }

        def build() -> Update:
            statement = (
                sa.update(t)
                .where(t.c.account_id == _param("id"))
                .values({name: _param(name, types[name]) for name in _COPIED})
            )
            return statement.returning(t.c.tag) if returning else statement

        return self._cached(("tags synced", returning), build)

    # ------------------------------------------------------------ protocol

    def add(self, account: Account, /) -> Account:
        """Store a new account; see :meth:`Storage.add`."""
        self.add_many([account])
        return account

    def add_many(self, accounts: Iterable[Account], /) -> int:
        """Store new accounts in one transaction, all or none; see
        :meth:`Storage.add_many`. The rows go in bulk, :data:`_INSERT_CHUNK`
        accounts at a time (see :meth:`_bulk`): 100,000 accounts take
        seconds. A duplicate within ``accounts`` is refused before anything is
        written; one with a stored account, by the database."""
        new = list(accounts)
        ids: set[str] = set()
        emails: dict[str, str] = {}
        for account in new:
            _check_lengths(account)
            if account.id in ids:
                raise duplicate_id(account.id)
            other = emails.setdefault(account.email.casefold(), account.id)
            if other != account.id:
                raise duplicate_email(account.email, other)
            ids.add(account.id)
        if not new:
            return 0
        adding = self._write("add accounts", duplicates=new, new=True)
        with adding as conn, self._bulk(conn) as insert:
            self._insert_accounts(insert, new)
        logger.debug("added %d accounts", len(new))
        if len(new) >= _ANALYZE_AFTER and self._engine.dialect.name == "postgresql":
            # Fresh statistics, so that the planner walks the claim indexes
            # right away rather than after autovacuum's next round.
            quote = self._engine.dialect.identifier_preparer.quote
            tables = ", ".join(
                quote(t.name) for t in self._schema.metadata.sorted_tables
            )
            with self._write("analyze the tables", single=True) as conn:
                conn.exec_driver_sql(f"ANALYZE {tables}")
        return len(new)

    def _insert_accounts(
        self,
        insert: Callable[[Table, list[dict[str, Any]]], None],
        accounts: Sequence[Account],
    ) -> None:
        """Insert the rows of new accounts. A function of its own: the rows
        (secrets in them) are locals of no frame that an error raised by
        :meth:`add_many` passes through."""
        a, t = self._schema.accounts, self._schema.tags
        for chunk in _chunks(accounts, _INSERT_CHUNK):
            rows = [_account_row(x, _RANKS.random(), self._box) for x in chunk]
            insert(a, rows)
            insert(
                t,
                [
                    tag_row
                    for account, row in zip(chunk, rows, strict=True)
                    for tag_row in _tag_rows(account.id, account.tags, row)
                ],
            )

    @contextmanager
    def _bulk(
        self, conn: Connection
    ) -> Iterator[Callable[[Table, list[dict[str, Any]]], None]]:
        """A function that inserts many rows into a table, in ``conn``'s
        transaction, as fast as the driver can: ``COPY`` (binary, so that no
        error message can quote a row) with psycopg 3, the sqlite3 module's
        own ``executemany`` (with a bigger page cache while it runs: the
        random ranks spread the index writes), SQLAlchemy's executemany
        elsewhere."""
        import sqlalchemy as sa

        dialect = conn.dialect
        dbapi_connection = conn.connection.dbapi_connection
        quote = dialect.identifier_preparer.quote

        def columns(table: Table) -> str:
            return ", ".join(quote(column.name) for column in table.c)

        def copy(table: Table, rows: list[dict[str, Any]]) -> None:
            names = [column.name for column in table.c]
            types = [_copy_type(column.type) for column in table.c]
            sql = f"COPY {quote(table.name)} ({columns(table)}) FROM STDIN"
            cursor: Any = dbapi_connection.cursor()  # type: ignore[union-attr]
            with cursor, cursor.copy(f"{sql} (FORMAT BINARY)") as stream:
                stream.set_types(types)
                for row in rows:
                    stream.write_row([row[name] for name in names])

        def executemany(table: Table, rows: list[dict[str, Any]]) -> None:
            names = [column.name for column in table.c]
            marks = ", ".join("?" for _ in names)
            sql = f"INSERT INTO {quote(table.name)} ({columns(table)}) VALUES ({marks})"
            cursor: Any = dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.executemany(
                    sql,
                    [tuple(_sqlite_value(row[name]) for name in names) for row in rows],
                )
            finally:
                cursor.close()

        def insert(table: Table, rows: list[dict[str, Any]]) -> None:
            if not rows:
                return
            if dialect.name == "postgresql" and dialect.driver == "psycopg":
                copy(table, rows)
            elif dialect.name == "sqlite" and dialect.driver == "pysqlite":
                executemany(table, rows)
            else:
                conn.execute(sa.insert(table), rows)

        if dialect.name != "sqlite":
            yield insert
            return
        cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
        conn.exec_driver_sql(f"PRAGMA cache_size = {_BULK_SQLITE_CACHE}")
        try:
            yield insert
        finally:
            conn.exec_driver_sql(f"PRAGMA cache_size = {int(cache or 0)}")

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
        with self._write("update an account", duplicates=[account]) as conn:
            # The count's end moves with the time zone: read the count's day
            # (the row locked), then write both.
            if not self._lock_row(conn, account.id):
                raise AccountNotFound(account.id, location=self._location)
            usage = conn.execute(
                sa.select(a.c.count_day, *(a.c[name] for name in _COPIED)).where(
                    a.c.id == account.id
                )
            ).mappings()
            row = dict(usage.one())
            count_day = row["count_day"]
            if count_day is not None and not isinstance(count_day, date):
                # SQLite (or a driver without date conversion): ISO text
                try:
                    count_day = _column(row, "count_day", date.fromisoformat)
                except ValueError as exc:
                    problem = str(exc)
                else:
                    problem = ""
                if problem:
                    raise StorageError(
                        f"account {account.id!r} in {self._location} is "
                        f"invalid: {problem}",
                        location=self._location,
                    )
            row["count_until"] = (
                _NEVER if count_day is None else _day_end(account.timezone, count_day)
            )
            conn.execute(
                sa.update(a)
                .where(a.c.id == account.id)
                .values(
                    {
                        **_settings_values(account, self._box),
                        "count_until": row["count_until"],
                    }
                )
            )
            conn.execute(sa.delete(t).where(t.c.account_id == account.id))
            if account.tags:
                conn.execute(sa.insert(t), _tag_rows(account.id, account.tags, row))
            return self._accounts_where(conn, a.c.id == account.id)[0]

    def save_oauth2_tokens(
        self,
        account_id: str,
        tokens: OAuth2Credentials,
        /,
        *,
        replacing: SecretStr | None,
    ) -> Account:
        """Compare-and-set renewed OAuth2 tokens (the
        :class:`~mailpool.transport.oauth2.TokenStore` protocol), in one
        transaction: lock the account's row, and when its refresh token
        (decrypted) equals ``replacing``, write the access token, refresh
        token and expiry of ``tokens``, and no other column.

        :returns: the account as stored afterwards, changed or not.
        :raises AccountNotFound: when there is no such account.
        """
        import sqlalchemy as sa

        a = self._schema.accounts
        with self._write("save OAuth2 tokens") as conn:
            stored = self._locked(conn, account_id)
            if stored is None:
                raise AccountNotFound(account_id, location=self._location)
            oauth = stored.oauth2
            if oauth is None or _secret(oauth.refresh_token) != _secret(replacing):
                return stored
            conn.execute(
                sa.update(a)
                .where(a.c.id == account_id)
                .values(
                    oauth2_access_token=_secret(tokens.access_token, self._box),
                    oauth2_refresh_token=_secret(tokens.refresh_token, self._box),
                    oauth2_token_expiry=_epoch(tokens.token_expiry),
                )
            )
            renewed = oauth.model_copy(
                update={
                    "access_token": tokens.access_token,
                    "refresh_token": tokens.refresh_token,
                    "token_expiry": _from_epoch(_epoch(tokens.token_expiry)),
                }
            )
        logger.debug("saved the renewed OAuth2 tokens of account %s", account_id)
        return stored.replace(oauth2=renewed)

    def remove(self, account_id: str, /) -> None:
        """See :meth:`Storage.remove`."""
        import sqlalchemy as sa

        a, t = self._schema.accounts, self._schema.tags
        with self._write("remove an account") as conn:
            # The account row first, like every other writer (claims lock it,
            # then its tag rows): the same order cannot deadlock. Its tag rows
            # then go by hand, as SQLite enforces ON DELETE CASCADE only with
            # the foreign_keys pragma, which a caller's own engine may not set.
            if conn.execute(sa.delete(a).where(a.c.id == account_id)).rowcount == 0:
                raise AccountNotFound(account_id, location=self._location)
            conn.execute(sa.delete(t).where(t.c.account_id == account_id))
        logger.debug("removed account %s", account_id)

    def _locked(self, conn: Connection, account_id: str) -> Account | None:
        """The account, its row locked until the transaction ends (None if
        there is no such account)."""
        if not self._lock_row(conn, account_id):
            return None
        return self._accounts_where(conn, self._schema.accounts.c.id == account_id)[0]

    def _lock_row(self, conn: Connection, account_id: str) -> bool:
        """Lock the account's row for the rest of the transaction; False when
        there is no such account.

        SQLite has no row locks: a write that changes nothing takes the
        database's write lock instead, also on an engine passed in (where
        the transaction begins as pysqlite pleases, without ``BEGIN
        IMMEDIATE``, and a read alone would lock nothing)."""
        import sqlalchemy as sa

        a = self._schema.accounts
        if conn.dialect.name == "sqlite":
            touch = sa.update(a).where(a.c.id == account_id).values(id=a.c.id)
            return conn.execute(touch).rowcount == 1
        locked = conn.execute(
            sa.select(a.c.id).where(a.c.id == account_id).with_for_update()
        ).first()
        return locked is not None

    def record_failure(self, account_id: str, failure: Failure, /) -> Account | None:
        """See :meth:`~mailpool.storage.base.RecordsFailures.record_failure`:
        the account row is locked, changed by the rule of
        :meth:`Account.with_failure` and written back (its health columns and
        its status) in one transaction.

        .. versionadded:: 0.2
        """
        import sqlalchemy as sa

        a = self._schema.accounts
        with self._write("record a failure") as conn:
            account = self._locked(conn, account_id)
            if account is None:
                return None
            failed = account.with_failure(failure)
            conn.execute(
                sa.update(a)
                .where(a.c.id == account_id)
                .values(
                    status=failed.status.value,
                    status_reason=failed.status_reason,
                    **_health_values(failed),
                )
            )
        return failed

    def candidates(
        self, claim: Claim, /, *, limit: int = CANDIDATE_SAMPLE
    ) -> list[Account]:
        """See :meth:`Storage.candidates`: the first ``limit`` allowed rows at
        or after a random rank (wrapping around), a window of the random
        order, read without locks. Costs the same however many accounts are
        in scope, as long as most of them are eligible."""
        import sqlalchemy as sa

        if limit <= 0:
            return []
        shape = _Shape.of(claim, Strategy.RANDOM)
        statement = self._cached(
            ("candidates", shape),
            lambda: self._pick(shape, limit=sa.bindparam("p_limit")),
        )
        params = shape.params(claim, claiming=False)
        params["p_limit"] = limit
        with self._read("find candidate accounts") as conn:
            ids = list(conn.execute(statement, params).scalars())
            if not ids:
                return []
            found = self._accounts_where(conn, self._schema.accounts.c.id.in_(ids))
        # Read in two statements: drop what changed in between.
        return [a.as_of(a.local_day(claim.now)) for a in found if claim.allows(a)]

    def claim(self, claim: Claim, /) -> Lease | None:
        """Pick and count with ONE conditional ``UPDATE``; see
        :meth:`Storage.claim`.

        The statement is ``UPDATE ... WHERE id = (pick) AND <allowed> RETURNING
        ...``: the pick walks an index in the strategy's order and returns the
        first allowed row (see the class documentation), and the ``WHERE``
        clause re-checks on the row as the database changes it that the claim
        still allows it (status, daily limit, minimum wait, a free send slot,
        scope, ``exclude``), so concurrent claims can never exceed a limit.
        The ``SET`` clause is the rule of :meth:`Account.with_claim`, computed
        by the database from the row itself, and gives the row a new random
        rank (from ``claim.rng``).

        - PostgreSQL: one statement (data-modifying CTEs) also copies the new
          values to the account's tag rows and returns its tags. The pick
          takes ``FOR UPDATE SKIP LOCKED``, so workers never queue behind one
          row lock; when every eligible row it saw was locked, the claim tries
          again (the last try waits for the locks), so ``None`` means that
          nothing was eligible.
        - SQLite: one ``UPDATE ... RETURNING`` (SQLite runs one write
          transaction at a time), then the tag rows in the same transaction.
        - Other databases: the pick, then the conditional ``UPDATE`` by id,
          picking again if another worker took the row in between.
        """
        shape = _Shape.of(claim)
        if self._claim_style == "cte":
            account = self._claim_postgresql(shape, claim)
        elif self._claim_style == "returning":
            account = self._claim_returning(shape, claim)
        else:
            account = self._claim_portable(shape, claim)
        if account is None:
            return None
        return Lease.of(account, claim)

    def _claim_postgresql(self, shape: _Shape, claim: Claim) -> Account | None:
        """Claim the tries of :data:`_ATTEMPTS` in turn: when one found
        nothing, look (without locks) whether an allowed row exists that other
        claims held locked, and try again if so. Even the last try, which
        waits for a lock, can find its row taken meanwhile (PostgreSQL then
        re-checks it and drops it): the sequence starts over, a few times,
        while allowed rows remain."""
        for _ in range(_ROUNDS):
            for lock in _ATTEMPTS:
                statement = self._claim_statement(shape, lock)
                with self._write("claim an account", single=True) as conn:
                    rows = conn.execute(statement, shape.params(claim)).mappings().all()
                    if rows:
                        tags = [row["tag"] for row in rows if row["tag"] is not None]
                        return self._account_of(rows[0], tags)
                    if shape.account_id and lock == "wait":
                        return None
                    probe = self._cached(("pick", shape), lambda: self._pick(shape))
                    params = shape.params(claim, claiming=False)
                    if conn.execute(probe, params).first() is None:
                        return None
                logger.debug("the allowed accounts were locked by other claims")
        return None

    def _claim_returning(self, shape: _Shape, claim: Claim) -> Account | None:
        statement = self._claim_statement(shape)
        with self._write("claim an account") as conn:
            row = conn.execute(statement, shape.params(claim)).mappings().first()
            if row is None:
                return None
            tags = conn.execute(
                self._tags_synced(returning=True),
                {"p_id": row["id"], **{f"p_{name}": row[name] for name in _COPIED}},
            ).scalars()
            return self._account_of(row, list(tags))

    def _claim_portable(self, shape: _Shape, claim: Claim) -> Account | None:
        import sqlalchemy as sa

        a, t = self._schema.accounts, self._schema.tags
        pick = self._cached(
            ("choice", shape),
            lambda: (
                self._choice(shape)
                if shape.strategy is Strategy.RANDOM
                else self._pick(shape)
            ),
        )
        update = self._claim_statement(shape)
        for _ in range(_PORTABLE_ATTEMPTS):
            params = shape.params(claim)
            with self._write("claim an account") as conn:
                chosen = claim.account_id
                if chosen is None:
                    chosen = conn.execute(pick, params).scalar()
                    if chosen is None:
                        return None
                zone = conn.execute(
                    sa.select(a.c.timezone).where(a.c.id == chosen)
                ).scalar()
                if zone is None:
                    return None
                day = _local_day(zone, params["p_now"])
                params.update(
                    p_timezone=zone, p_local_day=day, p_day_end=_day_end(zone, day)
                )
                params["p_account_id"] = chosen
                if conn.execute(update, params).rowcount == 1:
                    row = (
                        conn.execute(sa.select(a).where(a.c.id == chosen))
                        .mappings()
                        .one()
                    )
                    conn.execute(
                        self._tags_synced(returning=False),
                        {"p_id": chosen, **{f"p_{n}": row[n] for n in _COPIED}},
                    )
                    tags = conn.execute(
                        sa.select(t.c.tag).where(t.c.account_id == chosen)
                    ).scalars()
                    return self._account_of(row, list(tags))
                if claim.account_id is not None:
                    return None
            logger.debug("another worker claimed account %s first", chosen)
        return None

    def complete(self, lease: Lease, now: datetime, /) -> None:
        """See :meth:`Storage.complete`: one conditional ``UPDATE``, the rule
        of :meth:`Account.with_lease_ended` (the slot is freed only while the
        lease runs; the stamp never moves back)."""
        free = now < lease.expires_at
        statement = self._cached(("complete", free), lambda: self._complete(free))
        with self._write("complete a lease", single=True) as conn:
            conn.execute(statement, {"p_id": lease.account_id, "p_now": _epoch(now)})

    def _complete(self, free: bool) -> Update:
        import sqlalchemy as sa

        a = self._schema.accounts
        values: dict[str, Any] = {
            "consecutive_failures": _ZERO(),  # a delivery ends a run of failures
            "last_sent_at": sa.case(
                (
                    sa.or_(a.c.last_sent_at.is_(None), a.c.last_sent_at < _now()),
                    _now(),
                ),
                else_=a.c.last_sent_at,
            ),
        }
        if free:
            values.update(self._slot_freed())
        return sa.update(a).where(a.c.id == _param("id")).values(values)

    def release(self, lease: Lease, now: datetime, /) -> None:
        """See :meth:`Storage.release`: one conditional ``UPDATE``, the rule
        of :meth:`Account.with_lease_ended` (the unit is given back only if it
        was counted on the lease's day), with the copy of the count in the
        tag rows (in the same statement on PostgreSQL)."""
        free = now < lease.expires_at
        params = {"p_id": lease.account_id, "p_day": lease.day}
        statements = self._cached(("release", free), lambda: self._release(free))
        with self._write("release a lease", single=len(statements) == 1) as conn:
            for statement in statements:
                conn.execute(statement, params)

    def _release(self, free: bool) -> list[Update]:
        import sqlalchemy as sa

        a, t = self._schema.accounts, self._schema.tags
        counted = sa.and_(a.c.count_day == _day(), a.c.sent_count > 0)
        values: dict[str, Any] = {
            "sent_count": sa.case((counted, a.c.sent_count - 1), else_=a.c.sent_count)
        }
        if free:
            values.update(self._slot_freed())
        account_id = _param("id")
        statement = sa.update(a).where(a.c.id == account_id).values(values)
        if self._claim_style == "cte":
            ended = statement.returning(a.c.id, a.c.sent_count).cte("ended")
            return [
                sa.update(t)
                .where(t.c.account_id == ended.c.id)
                .values(sent_count=ended.c.sent_count)
            ]
        copy = (
            sa.update(t)
            .where(t.c.account_id == account_id)
            .values(
                sent_count=sa.select(a.c.sent_count)
                .where(a.c.id == account_id)
                .scalar_subquery()
            )
        )
        return [statement, copy]

    def _slot_freed(self) -> dict[str, Any]:
        """The ``SET`` that frees a running lease's send slot (a lease that
        ran out frees nothing: its slot may belong to a newer lease)."""
        import sqlalchemy as sa

        a = self._schema.accounts
        return {"in_flight": sa.case((a.c.in_flight > 0, a.c.in_flight - 1), else_=0)}

    def reset_daily_counts(self, *, owner: str | None = None) -> int:
        """See :meth:`Storage.reset_daily_counts`."""
        import sqlalchemy as sa

        a, t = self._schema.accounts, self._schema.tags
        statement = sa.update(a).where(a.c.sent_count > 0).values(sent_count=0)
        tags = sa.update(t).where(t.c.sent_count > 0).values(sent_count=0)
        if owner is not None:
            statement = statement.where(a.c.owner == owner)
            tags = tags.where(
                t.c.account_id.in_(sa.select(a.c.id).where(a.c.owner == owner))
            )
        with self._write("reset the daily counts") as conn:
            reset = conn.execute(statement).rowcount
            conn.execute(tags)
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
