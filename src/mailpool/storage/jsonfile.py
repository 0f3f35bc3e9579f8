"""JSONStorage: accounts in one human-readable JSON file, for one machine.

The file is the credential store, so secrets are written in clear and the file
is kept owner-only (``0600``). Every operation takes an exclusive lock on
``<file>.lock`` (an OS-level ``flock``, released by the kernel when a process
dies), re-reads the file, and writes a changed file atomically: a temporary
file in the same folder is written, flushed and fsynced, renamed over the old
one with :func:`os.replace`, and the folder is fsynced. A reader therefore
sees either the old or the new file, never a mix, even after ``kill -9`` or a
power cut.

A file that cannot be read or is invalid raises :class:`~mailpool.StorageError`
naming the path and the problem, and is never rewritten: fix it (or restore a
backup) and retry.

File format (version 1)::

    {
      "version": 1,
      "accounts": [
        {"id": "...", "email": "alice@example.com", "smtp": {...}, ...}
      ]
    }
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pydantic import BaseModel, SecretStr

from mailpool.encryption import PREFIX as ENCRYPTED_PREFIX
from mailpool.encryption import SecretBox, refuse_encrypted
from mailpool.errors import ConfigurationError, StorageError
from mailpool.models import Account
from mailpool.storage.simple import SimpleStorage, changed

__all__ = ["FORMAT_VERSION", "JSONStorage"]

FORMAT_VERSION = 1
"""The version of the file format this module reads and writes."""

_FILE_MODE = 0o600
_TOP_LEVEL_KEYS = frozenset({"version", "accounts"})
_log = logging.getLogger("mailpool.storage.json")

# Live instances, so that a forked child gets fresh locks (see _reset_after_fork).
_INSTANCES: weakref.WeakSet[JSONStorage] = weakref.WeakSet()


class JSONStorage(SimpleStorage):
    """Accounts in one JSON file, shared safely by the threads and processes
    of one machine.

    :param path: the JSON file. It need not exist (a missing file is an empty
        storage, created by the first write), but its folder must. A relative
        path is made absolute against the current directory, and symbolic
        links are resolved, when the storage is created: every path to one
        file shares one lock, and writes replace the real file, never the link.
    :param timeout: seconds to wait for the file lock before raising
        :class:`~mailpool.StorageError`.
    :param encryption: a :class:`~mailpool.encryption.SecretBox` to keep
        passwords and tokens encrypted in the file (the rest stays readable).

    File locks do not work reliably on network file systems (NFS, SMB): to
    share accounts between machines, use :class:`~mailpool.SQLStorage`.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 60.0,
        encryption: SecretBox | None = None,
    ) -> None:
        self._encryption = encryption
        self._path = Path(os.path.realpath(Path(path).absolute()))
        self._location = str(self._path)
        self._lock_path = self._path.with_name(self._path.name + ".lock")
        self._timeout = timeout
        # The file's bytes and the accounts parsed from them: reused while the
        # file holds exactly these bytes (compared in full, because mtime, size
        # and inode can all repeat within the file system's timestamp tick).
        self._cache: tuple[bytes, dict[str, Account]] | None = None
        self._swept = False
        self._new_locks()
        _INSTANCES.add(self)

    def _new_locks(self) -> None:
        # FileLock excludes other processes, but within a process it is a
        # re-entrant lock whose holds are counted per object (per thread since
        # filelock 3.11; shared by all threads before, so a second thread would
        # "acquire" it without waiting). The threading lock admits one thread
        # of this process at a time, whatever the filelock version, and guards
        # the cache. The lock file is owner-only like the data file.
        self._thread_lock = threading.Lock()
        self._file_lock = FileLock(self._lock_path, mode=_FILE_MODE)

    def _reset_after_fork(self) -> None:
        """Give a forked child its own locks: the parent's may be held by a
        thread that does not exist in the child."""
        self._new_locks()
        self._cache = None

    @classmethod
    def from_url(cls, url: str) -> JSONStorage:
        """Open ``json:///absolute/path.json`` or ``json://relative/path.json``.

        :raises ConfigurationError: if the URL names no file.
        """
        scheme, sep, path = url.partition("://")
        if scheme.lower() != "json" or not sep:
            raise ConfigurationError(f"{url!r} is not a json:// storage URL")
        if not path or path.endswith("/"):
            raise ConfigurationError(
                f"{url!r} names no file: use json:///absolute/path/accounts.json "
                "or json://relative/path/accounts.json"
            )
        return cls(path)

    @property
    def path(self) -> Path:
        """The JSON file (absolute, symbolic links resolved)."""
        return self._path

    def __repr__(self) -> str:
        return f"<JSONStorage {str(self._path)!r}>"

    @contextlib.contextmanager
    def locked_read(self) -> Iterator[Mapping[str, Account]]:
        """The accounts in the file, under its lock (see :class:`SimpleStorage`)."""
        with self._locked():
            yield self._load()

    @contextlib.contextmanager
    def locked_write(self) -> Iterator[dict[str, Account]]:
        """The accounts to change, under the file's lock; the file is rewritten
        atomically when they changed (see :class:`SimpleStorage`)."""
        with self._locked():
            before = self._load()
            accounts = dict(before)
            yield accounts
            if changed(before, accounts):
                self._save(accounts)

    def close(self) -> None:
        """Forget the cached file contents. Idempotent.

        No file or lock stays open between operations, so the storage may still
        be used afterwards; it simply reads the file again.
        """
        with self._thread_lock:
            self._cache = None

    # -- locking, reading, writing ---------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the thread lock and the file lock; map OS errors."""
        folder = self._path.parent
        if not folder.is_dir():
            # Checked first: FileLock would create the missing folders.
            raise StorageError(
                f"cannot use the account file {self._path}: its folder {folder} "
                "does not exist (create it first)",
                location=str(self._path),
            )
        with self._map_errors(), self._thread_lock:
            try:
                self._file_lock.acquire(timeout=self._timeout, poll_interval=0.005)
            except Timeout as exc:
                raise StorageError(
                    f"timed out after {self._timeout:g} s waiting for the lock "
                    f"{self._lock_path} of the account file {self._path}",
                    location=str(self._path),
                ) from exc
            try:
                yield
            finally:
                self._file_lock.release()

    @contextlib.contextmanager
    def _map_errors(self) -> Iterator[None]:
        """Turn every OSError into a StorageError naming the file."""
        try:
            yield
        except OSError as exc:
            raise StorageError(
                f"cannot read or write the account file {self._path}: {exc}",
                location=str(self._path),
            ) from exc

    def _load(self) -> dict[str, Account]:
        """The accounts in the file (the caller holds the locks; do not mutate)."""
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            self._cache = None
            return {}
        if self._cache is not None and self._cache[0] == data:
            return self._cache[1]
        self._cache = None
        accounts = _parse(data, self._path, self._encryption)
        self._cache = (data, accounts)
        _log.debug("read %d accounts from %s", len(accounts), self._path)
        return accounts

    def _save(self, accounts: dict[str, Account]) -> None:
        """Write ``accounts`` atomically (the caller holds the locks)."""
        document = {
            "version": FORMAT_VERSION,
            "accounts": [
                _dump(account, self._encryption) for account in accounts.values()
            ],
        }
        data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
        folder = self._path.parent
        if not self._swept:
            self._sweep_temp_files()
        fd, temp = tempfile.mkstemp(
            dir=folder, prefix=f".{self._path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as file:
                os.fchmod(file.fileno(), _FILE_MODE)
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._cache = (data, accounts)
        _fsync_folder(folder)
        _log.debug("wrote %d accounts to %s", len(accounts), self._path)

    def _sweep_temp_files(self) -> None:
        """Delete temporary files left by a writer that was killed mid-write.

        Only run under the file lock, when no other writer can be busy with one.
        """
        prefix = f".{self._path.name}."
        with os.scandir(self._path.parent) as entries:
            for entry in entries:
                if (
                    entry.name.startswith(prefix)
                    and entry.name.endswith(".tmp")
                    and entry.is_file(follow_symlinks=False)
                ):
                    _log.debug("deleting stale temporary file %s", entry.path)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        self._swept = True


def _dump(model: BaseModel, box: SecretBox | None) -> dict[str, Any]:
    """``model`` as JSON data, with secrets in clear (or encrypted by ``box``)
    and sets sorted."""
    data = model.model_dump(mode="json")
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            data[name] = box.encrypt(secret) if box else secret
        elif isinstance(value, BaseModel):
            data[name] = _dump(value, box)
        elif isinstance(value, (set, frozenset)):
            data[name] = sorted(data[name])
    return data


def _secrets_opened(item: dict[str, Any], box: SecretBox | None) -> dict[str, Any]:
    """``item`` with its encrypted secrets decrypted by ``box``.

    :raises ValueError: for a secret no key decrypts, or an encrypted one
        without ``box``.
    """
    opened = dict(item)
    for key in ("smtp", "oauth2"):
        section = item.get(key)
        if not isinstance(section, dict):
            continue
        section = dict(section)
        for name, value in section.items():
            if isinstance(value, str) and value.startswith(ENCRYPTED_PREFIX):
                section[name] = box.decrypt(value) if box else refuse_encrypted(value)
        opened[key] = section
    return opened


def _parse(data: bytes, path: Path, box: SecretBox | None) -> dict[str, Account]:
    """Validate the file's bytes; raise StorageError saying what is wrong.

    Messages name positions, fields and ids, never a value that could be secret.
    """

    def corrupt(problem: str) -> StorageError:
        return StorageError(
            f"the account file {path} is invalid and was left unchanged: {problem}",
            location=str(path),
        )

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise corrupt(f"it is not UTF-8 text (bad byte at offset {exc.start})") from exc
    if not text.strip():
        raise corrupt("it is empty (delete it to start with no accounts)")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise corrupt(
            f"it is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    except RecursionError:
        raise corrupt("it is nested too deeply to be an account file") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise corrupt(f"it holds a value JSON cannot represent here ({exc})") from None
    if not isinstance(document, dict):
        raise corrupt('the top level must be an object {"version": 1, "accounts": []}')
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise corrupt('"version" must be a positive whole number')
    if version > FORMAT_VERSION:
        raise corrupt(
            f"it has format version {version}, written by a newer mailpool; this "
            f"version reads format {FORMAT_VERSION} (upgrade mailpool)"
        )
    unknown = sorted(set(document) - _TOP_LEVEL_KEYS)
    if unknown:
        raise corrupt(f"unexpected top-level key(s) {', '.join(map(repr, unknown))}")
    items = document.get("accounts")
    if not isinstance(items, list):
        raise corrupt('"accounts" must be a list')

    accounts: dict[str, Account] = {}
    emails: dict[str, int] = {}
    ids: dict[str, int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise corrupt(f"account #{index} is not an object")
        try:
            item = _secrets_opened(item, box)
        except ValueError as exc:
            raise corrupt(f"account #{index}: {exc}") from None
        try:
            account = Account(**item)
        except ConfigurationError as exc:
            raise corrupt(f"account #{index}: {exc}") from None
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise corrupt(f"account #{index}: {type(exc).__name__}") from None
        if account.id in ids:
            raise corrupt(
                f"accounts #{ids[account.id]} and #{index} have the same id "
                f"{account.id!r}"
            )
        email = account.email.casefold()
        if email in emails:
            raise corrupt(
                f"accounts #{emails[email]} and #{index} have the same email "
                f"{account.email!r}"
            )
        ids[account.id] = emails[email] = index
        accounts[account.id] = account
    return accounts


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":  # pragma: no cover
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - file systems without dir fsync
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _reset_after_fork() -> None:  # pragma: no cover - runs in forked children
    for storage in list(_INSTANCES):
        storage._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
