"""What every command gets: its arguments, its output and its storage."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TextIO

from mailpool.cli._errors import CommandError
from mailpool.cli._output import Output
from mailpool.cli._storage import open_cli_storage, redact, storage_url, url_secrets
from mailpool.errors import AccountNotFound
from mailpool.models import Account
from mailpool.storage import Storage

__all__ = ["Context"]


class Context:
    """One run of the command."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        stdin: TextIO,
        stdout: TextIO,
        stderr: TextIO,
        environ: Mapping[str, str],
    ) -> None:
        self.args = args
        self.stdin = stdin
        self.environ = environ
        self.out = Output(
            stdout, stderr, as_json=bool(getattr(args, "json", False)), secrets=set()
        )
        self._url: str | None = None
        self._storage: Storage | None = None

    @property
    def url(self) -> str:
        """The storage URL (``--storage`` or ``MAILPOOL_STORAGE``); never print it."""
        if self._url is None:
            self._url = storage_url(getattr(self.args, "storage", None), self.environ)
            self.out.secrets |= url_secrets(self._url)
        return self._url

    def require_storage_url(self) -> None:
        """Fail now (before any prompt) if no storage is given."""
        self.url  # noqa: B018 - the property raises CommandError

    @property
    def shown(self) -> str:
        """The storage URL with its password hidden, for messages."""
        return redact(self.url)

    def storage(self, *, create: bool = False) -> Storage:
        """The storage, opened on first use; see :func:`open_cli_storage`."""
        if self._storage is None:
            self._storage = open_cli_storage(self.url, create=create)
        return self._storage

    def find(self, key: str) -> Account:
        """The account with id ``key``, else with email ``key``.

        :raises CommandError: when there is none.
        """
        storage = self.storage()
        try:
            return storage.get(key)
        except AccountNotFound:
            pass
        try:
            return storage.get_by_email(key)
        except AccountNotFound:
            raise CommandError(
                f"no account with id or email {key!r} in {self.shown}"
            ) from None

    def close(self) -> None:
        """Close the storage if it was opened."""
        if self._storage is not None:
            storage, self._storage = self._storage, None
            storage.close()
