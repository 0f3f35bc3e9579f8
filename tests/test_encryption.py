"""Encryption at rest: secrets unreadable in the file, a wrong or missing key
refused without changing anything, and key rotation."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from mailpool import (
    Account,
    ConfigurationError,
    JSONStorage,
    OAuth2Credentials,
    SMTPSettings,
    Storage,
    StorageError,
)
from mailpool.encryption import SecretBox, reencrypt

PASSWORD = "app-password-3ncrypt-me"
TOKEN = "ya29.access-t0ken"
KEY, OTHER_KEY = SecretBox.generate_key(), SecretBox.generate_key()

Opener = Callable[[SecretBox | None], Storage]


def account() -> Account:
    return Account(
        email="alice@example.com",
        smtp=SMTPSettings(host="smtp.example.com", password=PASSWORD),
        oauth2=OAuth2Credentials(access_token=TOKEN),
    )


@pytest.fixture(params=["json", "sqlite"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The file of the storage: a JSON file or a SQLite database."""
    return tmp_path / ("accounts.json" if request.param == "json" else "accounts.db")


@pytest.fixture
def open_storage(location: Path) -> Opener:
    if location.suffix == ".json":

        def open_(box: SecretBox | None) -> Storage:
            return JSONStorage(location, encryption=box)

        return open_
    from sqlalchemy.pool import NullPool

    from mailpool import SQLStorage

    def open_sql(box: SecretBox | None) -> Storage:
        # No pooled connection stays open, so that SQLite checkpoints its WAL
        # into the file after each operation: the file's bytes say it all.
        return SQLStorage(
            f"sqlite:///{location}",
            encryption=box,
            engine_options={"poolclass": NullPool},
        )

    return open_sql


def test_secrets_are_encrypted_at_rest_and_read_back(
    location: Path, open_storage: Opener
) -> None:
    stored = open_storage(SecretBox(KEY)).add(account())

    data = location.read_bytes()
    assert PASSWORD.encode() not in data and TOKEN.encode() not in data
    assert b"fernet:" in data and b"alice@example.com" in data  # the rest readable
    again = open_storage(SecretBox(KEY)).get(stored.id)
    assert again.smtp.password is not None
    assert again.smtp.password.get_secret_value() == PASSWORD
    assert again.oauth2 is not None and again.oauth2.access_token is not None
    assert again.oauth2.access_token.get_secret_value() == TOKEN


@pytest.mark.parametrize("box", [None, SecretBox(OTHER_KEY)], ids=["no-key", "wrong"])
def test_a_missing_or_wrong_key_is_refused_and_changes_nothing(
    location: Path, open_storage: Opener, box: SecretBox | None
) -> None:
    open_storage(SecretBox(KEY)).add(account())
    before = location.read_bytes()

    storage = open_storage(box)
    with pytest.raises(StorageError, match="encrypt") as info:
        storage.accounts()
    with pytest.raises(StorageError):
        storage.add(account().replace(email="bob@example.com", id="bob"))

    assert location.read_bytes() == before
    assert PASSWORD not in str(info.value)


def test_keys_rotate_without_losing_a_secret(
    location: Path, open_storage: Opener
) -> None:
    stored = open_storage(SecretBox(OLD := KEY)).add(account())
    old_tokens = location.read_bytes()

    rotating = open_storage(SecretBox(OTHER_KEY, OLD))
    assert rotating.get(stored.id).smtp.password is not None  # old key still reads
    assert reencrypt(rotating) == 1
    assert location.read_bytes() != old_tokens

    new_only = open_storage(SecretBox(OTHER_KEY))
    password = new_only.get(stored.id).smtp.password
    assert password is not None and password.get_secret_value() == PASSWORD
    with pytest.raises(StorageError):
        open_storage(SecretBox(OLD)).accounts()  # the old key no longer reads it


def test_a_plain_file_is_encrypted_by_its_first_write_with_a_key(
    location: Path, open_storage: Opener
) -> None:
    stored = open_storage(None).add(account())
    assert PASSWORD.encode() in location.read_bytes()

    assert reencrypt(open_storage(SecretBox(KEY))) == 1

    assert PASSWORD.encode() not in location.read_bytes()
    assert open_storage(SecretBox(KEY)).get(stored.id).email == "alice@example.com"


def test_rewrites_keep_the_same_ciphertext(
    location: Path, open_storage: Opener
) -> None:
    storage = open_storage(SecretBox(KEY))
    alice = storage.add(account())
    before = _stored_password(location, alice.id)
    storage.add(account().replace(email="bob@example.com", id="bob"))
    # The whole file was rewritten; Alice's token was not re-encrypted.
    assert _stored_password(location, alice.id) == before
    assert before.startswith("fernet:")


def _stored_password(location: Path, account_id: str) -> str:
    if location.suffix == ".db":
        with contextlib.closing(sqlite3.connect(location)) as conn:
            (value,) = conn.execute(
                "SELECT smtp_password FROM mailpool_accounts WHERE id = ?",
                (account_id,),
            ).fetchone()
        return str(value)
    document = json.loads(location.read_text())
    (item,) = [a for a in document["accounts"] if a["id"] == account_id]
    return str(item["smtp"]["password"])


@pytest.mark.parametrize("key", ["", "not-a-key", b"x" * 10])
def test_a_malformed_key_is_a_configuration_error(key: str | bytes) -> None:
    with pytest.raises(ConfigurationError, match="key"):
        SecretBox(key)


def test_a_box_without_keys_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="key"):
        SecretBox()


def test_the_box_repr_shows_no_key() -> None:
    assert KEY not in repr(SecretBox(KEY))
