"""open_storage(): which URL opens which backend, and the errors for bad URLs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from contract import make_account

from mailpool import ConfigurationError, InMemoryStorage, JSONStorage, open_storage


def test_memory_url_opens_an_in_memory_storage() -> None:
    storage = open_storage("memory://")
    assert isinstance(storage, InMemoryStorage)
    assert storage.accounts() == []


def test_memory_url_with_a_path_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="memory://"):
        open_storage("memory://somewhere")


def test_json_url_with_an_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    url = f"json://{path}"
    assert url.startswith("json:///")
    storage = open_storage(url)
    assert isinstance(storage, JSONStorage)
    assert storage.path == path
    storage.add(make_account())
    assert path.exists()


def test_json_url_with_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    storage = open_storage("json://data/accounts.json")
    assert isinstance(storage, JSONStorage)
    assert storage.path == tmp_path / "data" / "accounts.json"
    storage.add(make_account())
    assert (tmp_path / "data" / "accounts.json").exists()


def test_scheme_is_case_insensitive(tmp_path: Path) -> None:
    assert isinstance(open_storage(f"JSON://{tmp_path}/a.json"), JSONStorage)


@pytest.mark.parametrize("url", ["json://", "json:///", "json://data/"])
def test_json_url_without_a_file_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="names no file"):
        open_storage(url)


def test_unknown_scheme_names_the_known_schemes() -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_storage("redis://localhost:6379/0")
    message = str(caught.value)
    assert "'redis'" in message
    for scheme in ("memory://", "json://", "sqlite://", "postgresql://"):
        assert scheme in message


@pytest.mark.parametrize("url", ["accounts.json", "/var/lib/app/accounts.json", ""])
def test_url_without_a_scheme_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not a storage URL"):
        open_storage(url)


@pytest.mark.parametrize(
    "url",
    [
        "foo://user:s3cret@host/db",
        "user:s3cret@host/db",
        "foo://user:s3cret@host:5432/db?sslmode=require",
    ],
)
def test_a_password_in_a_bad_url_is_redacted(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_storage(url)
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in repr(caught.value)


def test_sql_url_without_sqlalchemy_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SQLAlchemy cannot be uninstalled mid-test: None in sys.modules makes
    # "import sqlalchemy" raise ImportError, as when the extra is missing.
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    for url in ("sqlite:///never-created.db", "postgresql+psycopg://u:pw@h/db"):
        with pytest.raises(ConfigurationError, match=r"mailpool\[sql\]") as caught:
            open_storage(url)
        assert "pw@" not in str(caught.value)
