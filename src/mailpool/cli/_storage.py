"""Which storage the command works on, shown without its secrets.

Only ``accounts add`` and ``accounts import`` may create a storage; every
other command refuses a storage that does not exist yet (a missing JSON file,
SQLite file or set of SQL tables), naming it, and creates nothing.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from mailpool.cli._errors import CommandError
from mailpool.storage import SQLStorage, Storage, open_storage

__all__ = ["STORAGE_ENV", "open_cli_storage", "redact", "storage_url", "url_secrets"]

STORAGE_ENV = "MAILPOOL_STORAGE"
"""The environment variable that names the storage when ``--storage`` is not given."""

_EXAMPLES = "json:///var/lib/mailpool/accounts.json or sqlite:////var/lib/mailpool.db"
_CREATE_HINT = "'mailpool accounts add' or 'mailpool accounts import' create it"
# A password in a URL: after "scheme://user:" up to the last "@" (hiding too
# much is safe, showing part of a password is not).
_USERINFO = re.compile(r"^(?P<user>[^:/@?#]*):(?P<password>.*)@(?P<rest>[^@]*)$", re.S)
_SECRET_QUERY = re.compile(
    r"(?P<key>[^&=?]*(?:pass|pwd|secret|token|key)[^&=]*)=(?P<value>[^&]*)", re.I
)


def storage_url(given: str | None, environ: Mapping[str, str]) -> str:
    """The storage URL from ``--storage``, else from ``MAILPOOL_STORAGE``.

    :raises CommandError: when neither is set.
    """
    url = given if given is not None else environ.get(STORAGE_ENV)
    if url is None or not url.strip():
        raise CommandError(
            f"no storage given: pass --storage URL or set {STORAGE_ENV} "
            f"(e.g. {_EXAMPLES})"
        )
    return url.strip()


def _split(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.partition("://")
    return (scheme + sep, rest) if sep else ("", url)


def redact(url: str) -> str:
    """``url`` with any password (in the user info or the query) as ``***``."""
    prefix, rest = _split(url)
    if prefix.lower().startswith(("json:", "memory:")):
        return url  # a file path: no credentials
    match = _USERINFO.match(rest)
    if match is not None:
        rest = f"{match['user']}:***@{match['rest']}"
    head, question, query = rest.partition("?")
    if question:
        query = _SECRET_QUERY.sub(lambda m: f"{m['key']}=***", query)
    return f"{prefix}{head}{question}{query}"


def url_secrets(url: str) -> set[str]:
    """The secrets a URL holds (as written and URL-decoded), to keep them out
    of any message the command prints."""
    _, rest = _split(url)
    found: set[str] = set()
    match = _USERINFO.match(rest)
    if match is not None:
        found.add(match["password"])
    _, _, query = rest.partition("?")
    found.update(m["value"] for m in _SECRET_QUERY.finditer(query))
    found |= {unquote(secret) for secret in found}
    return {secret for secret in found if secret}


def _base_scheme(url: str) -> str:
    return url.partition("://")[0].lower().split("+", 1)[0]


def _json_path(url: str) -> Path | None:
    path = url.partition("://")[2]
    return Path(path) if path and not path.endswith("/") else None


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database (or a URL
    that open_storage will refuse with its own message)."""
    try:
        import sqlalchemy as sa
    except ImportError:
        return None
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        return None
    database = parsed.database
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):  # a sqlite3 URI filename (?uri=true)
        database = database[len("file:") :].partition("?")[0]
    return Path(database)


def _table_names() -> list[str]:
    return [table.name for table in SQLStorage.metadata.sorted_tables]


def _sqlite_missing_tables(path: Path, shown: str) -> list[str]:
    """The mailpool tables a SQLite file lacks, read without writing to it."""
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            found = {
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read the storage {shown}: {exc}") from None
    return [name for name in _table_names() if name not in found]


def _missing_tables(storage: SQLStorage) -> list[str]:
    """The mailpool tables the database lacks (none when it cannot be asked:
    the storage then reports the connection problem itself, redacted)."""
    import sqlalchemy as sa

    try:
        inspector = sa.inspect(storage.engine)
        return [name for name in _table_names() if not inspector.has_table(name)]
    except sa.exc.SQLAlchemyError:
        return []


def open_cli_storage(url: str, *, create: bool) -> Storage:
    """Open the storage ``url`` names.

    :param create: whether the command may create the storage (a new JSON or
        SQLite file, the SQL tables). Without it, a storage that does not exist
        is an error naming it, and nothing is created.
    :raises CommandError: for a storage that does not exist (and ``create`` is
        false).
    """
    shown = redact(url)
    base = _base_scheme(url)
    if not create:
        path = (
            _json_path(url)
            if base == "json"
            else _sqlite_path(url)
            if base == "sqlite"
            else None
        )
        if path is not None and not path.exists():
            raise CommandError(
                f"the storage {shown} does not exist (no file {path}): {_CREATE_HINT}"
            )
        if path is not None and base == "sqlite":
            _refuse_missing(_sqlite_missing_tables(path, shown), shown)
    storage = open_storage(url)
    if create or not isinstance(storage, SQLStorage):
        return storage
    storage.close()
    storage = SQLStorage(url, create_tables=False)
    try:
        _refuse_missing(_missing_tables(storage), shown)
    except CommandError:
        storage.close()
        raise
    return storage


def _refuse_missing(tables: list[str], shown: str) -> None:
    if tables:
        raise CommandError(
            f"the storage {shown} does not exist (no table {', '.join(tables)}): "
            f"{_CREATE_HINT}"
        )
