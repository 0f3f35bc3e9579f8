"""Encryption at rest of the secrets a storage keeps (extra ``mailpool[encryption]``).

.. code-block:: python

    from mailpool import JSONStorage
    from mailpool.encryption import SecretBox

    key = SecretBox.generate_key()  # keep it out of the storage (env var, vault)
    storage = JSONStorage("accounts.json", encryption=SecretBox(key))

Passwords, OAuth2 tokens and client secrets are stored as Fernet tokens
(AES-128-CBC with HMAC-SHA256, from the ``cryptography`` package) marked
``fernet:``; everything else stays readable. A storage opened without the key,
or with a wrong one, refuses to read them with a :class:`~mailpool.StorageError`
and changes nothing.

Key rotation: open the storage with ``SecretBox(new_key, old_key)`` (the first
key encrypts, every key decrypts), call :func:`reencrypt`, then drop the old key.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

from mailpool.errors import ConfigurationError

if TYPE_CHECKING:
    from mailpool.models import Account

__all__ = ["PREFIX", "SecretBox", "reencrypt"]

PREFIX = "fernet:"
"""Marks an encrypted value in a file or a database column."""

_MISSING = (
    "encryption needs the cryptography package: pip install 'mailpool[encryption]'"
)


class SecretBox:
    """Encrypts and decrypts stored secrets with one or more Fernet keys.

    :param keys: URL-safe base64 Fernet keys (:meth:`generate_key`); the first
        encrypts, all of them decrypt.
    :raises ConfigurationError: without keys, for a malformed key, or when
        ``cryptography`` is not installed.

    .. versionadded:: 0.2
    """

    def __init__(self, *keys: str | bytes) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError as exc:  # pragma: no cover - the extra is installed in CI
            raise ConfigurationError(_MISSING) from exc
        if not keys:
            raise ConfigurationError("SecretBox needs at least one key")
        try:
            fernets = [Fernet(key) for key in keys]
        except (ValueError, TypeError):
            raise ConfigurationError(
                "a SecretBox key must be 32 url-safe base64-encoded bytes, as "
                "SecretBox.generate_key() makes"
            ) from None
        self._primary = fernets[0]
        self._fernet = MultiFernet(fernets)
        # Encrypting is randomized: remember each secret's token so that a
        # rewrite of the whole file does not change (or re-encrypt) every one.
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "<SecretBox>"

    @staticmethod
    def generate_key() -> str:
        """A new random key."""
        try:
            from cryptography.fernet import Fernet
        except ImportError as exc:  # pragma: no cover
            raise ConfigurationError(_MISSING) from exc
        return Fernet.generate_key().decode("ascii")

    def encrypt(self, secret: str) -> str:
        """``secret`` as ``fernet:<token>``, under the first key."""
        with self._lock:
            token = self._tokens.get(secret)
            if token is None:
                token = PREFIX + self._fernet.encrypt(secret.encode()).decode("ascii")
                self._tokens[secret] = token
            return token

    def decrypt(self, stored: str) -> str:
        """The secret in ``stored`` (``fernet:...``, or plain text as written
        before encryption was turned on).

        :raises ValueError: when no key decrypts it (a wrong key), naming no
            part of it.
        """
        if not stored.startswith(PREFIX):
            return stored
        from cryptography.fernet import InvalidToken

        token = stored[len(PREFIX) :].encode("ascii", "replace")
        try:
            secret = self._primary.decrypt(token).decode()
        except (InvalidToken, UnicodeError):
            pass
        else:
            with self._lock:
                self._tokens.setdefault(secret, stored)  # current: keep as is
            return secret
        try:
            return self._fernet.decrypt(token).decode()  # an older key
        except (InvalidToken, UnicodeError):
            raise ValueError(
                "an encrypted secret could not be decrypted with the keys given "
                "(a wrong or missing key)"
            ) from None


def refuse_encrypted(value: str) -> str:
    """``value``, unless it is encrypted (a storage opened without a key).

    :raises ValueError: saying to pass the key.
    """
    if value.startswith(PREFIX):
        raise ValueError(
            "it holds encrypted secrets: open the storage with "
            "encryption=SecretBox(key)"
        )
    return value


class _Rewritable(Protocol):
    def accounts(self) -> list[Account]: ...
    def update(self, account: Account, /) -> Account: ...


def reencrypt(storage: _Rewritable) -> int:
    """Rewrite every account, so that its secrets are encrypted with the first
    key of the storage's :class:`SecretBox` (or in clear, without one).

    :returns: how many accounts were rewritten.
    """
    count = 0
    for account in storage.accounts():
        storage.update(account)
        count += 1
    return count
