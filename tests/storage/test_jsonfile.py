"""JSONStorage: the contract, and what only a file has (format, permissions,
corrupt files, atomic writes, locks shared by threads and objects)."""

from __future__ import annotations

import functools
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from contract import (
    NOW,
    Reopen,
    StorageContract,
    assert_exactly_the_limit_granted,
    claim,
    claim_in_threads,
    make_account,
)
from filelock import FileLock

from mailpool import (
    Account,
    AccountNotFound,
    ConfigurationError,
    JSONStorage,
    SMTPSettings,
    Storage,
    StorageError,
)
from pooltools import ProtocolOnly


class TestJSONStorage(StorageContract):
    @pytest.fixture
    def reopen(self, tmp_path: Path) -> Reopen:
        return functools.partial(JSONStorage, tmp_path / "accounts.json")

    @pytest.fixture
    def storage(self, reopen: Reopen) -> Iterator[Storage]:
        storage = reopen()
        yield storage
        storage.close()


class TestJSONStorageReopenedForEveryCall(StorageContract):
    """The contract again, every value read back from the file itself."""

    @pytest.fixture
    def reopen(self, tmp_path: Path) -> Reopen:
        fresh = functools.partial(JSONStorage, tmp_path / "accounts.json")
        return functools.partial(ProtocolOnly, fresh)

    @pytest.fixture
    def storage(self, reopen: Reopen) -> Storage:
        return reopen()


# -- helpers ------------------------------------------------------------------


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "accounts.json"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(folder: Path) -> set[str]:
    """Files in ``folder`` besides the account file and its lock file."""
    return {p.name for p in folder.iterdir()} - {"accounts.json", "accounts.json.lock"}


def secret_account(email: str = "alice@example.com", **fields: Any) -> Account:
    return make_account(
        email,
        smtp=SMTPSettings(host="smtp.example.com", username=email, password="hunter2"),
        **fields,
    )


# -- the file -----------------------------------------------------------------


def test_missing_file_is_an_empty_storage_and_reads_do_not_create_it(
    path: Path,
) -> None:
    storage = JSONStorage(path)
    assert storage.accounts() == []
    assert storage.candidates(claim()) == []
    assert storage.claim(claim()) is None
    assert storage.reset_daily_counts() == 0
    with pytest.raises(AccountNotFound):
        storage.get("nope")
    assert not path.exists()
    storage.add(make_account())
    assert path.exists()


def test_file_is_human_readable_json_with_secrets_in_clear(path: Path) -> None:
    account = secret_account(tags={"zeta", "alpha"}, owner="acme")
    JSONStorage(path).add(account)
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "version": 1,\n  "accounts": [\n')
    assert text.endswith("}\n")
    document = json.loads(text)
    assert list(document) == ["version", "accounts"]
    [stored] = document["accounts"]
    assert stored["id"] == account.id
    assert stored["email"] == "alice@example.com"
    assert stored["owner"] == "acme"
    assert stored["tags"] == ["alpha", "zeta"]
    assert stored["status"] == "active"
    # The file is the credential store: the password is there, in clear.
    assert stored["smtp"]["password"] == "hunter2"
    assert "**********" not in text


def test_file_keeps_non_ascii_readable(path: Path) -> None:
    JSONStorage(path).add(make_account(sender_name="Zoë Ünïcode"))
    assert "Zoë Ünïcode" in path.read_text(encoding="utf-8")


def test_file_and_lock_file_are_owner_only(path: Path) -> None:
    storage = JSONStorage(path)
    account = storage.add(make_account())
    assert mode(path) == 0o600
    assert mode(path.with_name("accounts.json.lock")) == 0o600
    storage.update(account.replace(sender_name="Renamed"))
    assert storage.claim(claim()) is not None
    assert mode(path) == 0o600


def test_a_too_open_file_is_made_owner_only_on_the_next_write(path: Path) -> None:
    storage = JSONStorage(path)
    account = storage.add(make_account())
    path.chmod(0o644)
    storage.update(account.replace(sender_name="Renamed"))
    assert mode(path) == 0o600


def test_no_temporary_files_are_left_behind(path: Path) -> None:
    storage = JSONStorage(path)
    accounts = [storage.add(make_account(f"user{i}@example.com")) for i in range(5)]
    for account in accounts:
        lease = storage.claim(claim(account_id=account.id))
        assert lease is not None
        storage.release(lease, NOW)
        storage.update(account.replace(sender_name="x"))
    storage.remove(accounts[0].id)
    storage.reset_daily_counts()
    assert leftovers(path.parent) == set()


def test_temporary_files_of_a_killed_writer_are_swept(path: Path) -> None:
    JSONStorage(path).add(make_account())
    stale = path.with_name(".accounts.json.k1ll3d.tmp")
    stale.write_text("half a file")
    unrelated = path.with_name("notes.tmp")
    unrelated.write_text("mine")
    JSONStorage(path).add(make_account("bob@example.com"))
    assert not stale.exists()
    assert unrelated.read_text() == "mine"


def test_a_failed_write_leaves_the_file_and_no_temporary_file(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = JSONStorage(path)
    account = storage.add(make_account())
    before = path.read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError, match="No space left") as caught:
        storage.update(account.replace(sender_name="Lost"))
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.location == str(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(path.parent) == set()
    assert storage.get(account.id) == account


def test_missing_folder_raises_storage_error_and_creates_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "missing" / "accounts.json"
    storage = JSONStorage(path)
    with pytest.raises(StorageError, match="does not exist") as caught:
        storage.add(make_account())
    assert str(tmp_path / "missing") in str(caught.value)
    assert caught.value.location == str(path)
    with pytest.raises(StorageError, match="does not exist"):
        storage.accounts()
    assert not (tmp_path / "missing").exists()


def test_os_errors_become_storage_errors_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    path.mkdir()  # a folder where the file should be
    storage = JSONStorage(path)
    with pytest.raises(StorageError) as caught:
        storage.accounts()
    assert str(path) in str(caught.value)
    assert caught.value.location == str(path)
    assert isinstance(caught.value.__cause__, OSError)


def test_relative_path_is_fixed_when_the_storage_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = JSONStorage("accounts.json")
    assert storage.path == tmp_path / "accounts.json"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    storage.add(make_account())
    assert (tmp_path / "accounts.json").exists()


# -- corrupt files ------------------------------------------------------------


def _valid_document() -> dict[str, Any]:
    account = secret_account()
    return {
        "version": 1,
        "accounts": [
            json.loads(
                json.dumps(
                    {
                        **account.model_dump(mode="json"),
                        "smtp": {
                            **account.smtp.model_dump(mode="json"),
                            "password": "hunter2",
                        },
                    }
                )
            )
        ],
    }


def _with(change: Callable[[dict[str, Any]], object]) -> bytes:
    document = _valid_document()
    change(document)
    return json.dumps(document, indent=2).encode()


def _set_account_field(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["accounts"][0][field] = value

    return change


VALID = json.dumps(_valid_document(), indent=2).encode()

CORRUPT: dict[str, tuple[bytes, str]] = {
    "binary garbage": (b"\xff\xfe\x00garbage\x81", "not UTF-8"),
    "plain text": (b"hello, I am not JSON\n", "line 1, column 1"),
    "empty": (b"", "empty"),
    "truncated": (VALID[: len(VALID) // 2], "not valid JSON: .* at line"),
    "top level is a list": (b"[]", "top level"),
    "no version": (b'{"accounts": []}', "version"),
    "version is text": (b'{"version": "1", "accounts": []}', "version"),
    "newer version": (b'{"version": 2, "accounts": []}', "newer"),
    "no accounts": (b'{"version": 1}', '"accounts" must be a list'),
    "accounts is an object": (b'{"version": 1, "accounts": {}}', "must be a list"),
    "unknown top-level key": (
        b'{"version": 1, "accounts": [], "extra": 1}',
        "'extra'",
    ),
    "account is not an object": (b'{"version": 1, "accounts": [7]}', "#0"),
    "invalid email": (
        _with(_set_account_field("email", "not-an-email")),
        r"account #0: .*email",
    ),
    "invalid port": (
        _with(lambda d: d["accounts"][0]["smtp"].update(port=70000)),
        r"account #0: .*smtp\.port",
    ),
    "unknown field": (
        _with(_set_account_field("colour", "blue")),
        r"account #0: .*colour",
    ),
    "negative count": (
        _with(_set_account_field("sent_count", -1)),
        r"account #0: .*sent_count",
    ),
    "duplicate id": (
        _with(lambda d: d["accounts"].append({**d["accounts"][0], "email": "b@x.io"})),
        "same id",
    ),
    "duplicate email": (
        _with(
            lambda d: d["accounts"].append(
                {**d["accounts"][0], "id": "other", "email": "ALICE@example.com"}
            )
        ),
        "same email",
    ),
}


@pytest.mark.parametrize(
    ("content", "problem"), CORRUPT.values(), ids=list(CORRUPT.keys())
)
def test_corrupt_file_raises_and_is_never_rewritten(
    path: Path, content: bytes, problem: str
) -> None:
    path.write_bytes(content)
    path.chmod(0o600)
    storage = JSONStorage(path)
    account = make_account("new@example.com")
    attempts: list[Callable[[], object]] = [
        storage.accounts,
        lambda: storage.get("whatever"),
        lambda: storage.get_by_email("alice@example.com"),
        lambda: storage.candidates(claim()),
        lambda: storage.add(account),
        lambda: storage.update(account),
        lambda: storage.remove(account.id),
        lambda: storage.claim(claim()),
        lambda: storage.add_many([account]),
        lambda: storage.reset_daily_counts(),
    ]
    for attempt in attempts:
        with pytest.raises(StorageError, match=problem) as caught:
            attempt()
        error = caught.value
        assert type(error) is StorageError
        assert str(path) in str(error)
        assert error.location == str(path)
        assert "hunter2" not in str(error)
    assert path.read_bytes() == content
    assert leftovers(path.parent) == set()


def test_invalid_account_error_names_index_and_field_but_no_secret(
    path: Path,
) -> None:
    document = _valid_document()
    second = {
        **document["accounts"][0],
        "id": "second",
        "email": "bob@example.com",
        "smtp": {**document["accounts"][0]["smtp"], "port": "hunter2-not-a-port"},
    }
    document["accounts"].append(second)
    path.write_text(json.dumps(document, indent=2))
    with pytest.raises(StorageError) as caught:
        JSONStorage(path).accounts()
    message = str(caught.value)
    assert "account #1" in message
    assert "smtp.port" in message
    assert "hunter2" not in message


def test_a_repaired_file_is_read_again(path: Path) -> None:
    path.write_text("{ broken")
    storage = JSONStorage(path)
    with pytest.raises(StorageError):
        storage.accounts()
    path.write_bytes(VALID)
    assert [a.email for a in storage.accounts()] == ["alice@example.com"]


# -- secrets ------------------------------------------------------------------


def test_secrets_are_not_in_repr_or_error_messages(path: Path) -> None:
    storage = JSONStorage(path)
    account = storage.add(secret_account())
    assert "hunter2" in path.read_text()  # the file is the credential store
    assert "hunter2" not in repr(storage)
    assert str(path) in repr(storage)
    errors: list[Exception] = []
    attempts: list[Callable[[], object]] = [
        lambda: storage.add(secret_account()),
        lambda: storage.add(secret_account("ALICE@example.com")),
        lambda: storage.update(secret_account("other@example.com")),
    ]
    for attempt in attempts:
        with pytest.raises((ConfigurationError, AccountNotFound)) as caught:
            attempt()
        errors.append(caught.value)
    assert all("hunter2" not in f"{e} {e!r}" for e in errors)
    assert "hunter2" not in repr(storage.get(account.id))


# -- sharing ------------------------------------------------------------------


def test_two_objects_on_one_file_see_each_others_writes(path: Path) -> None:
    first, second = JSONStorage(path), JSONStorage(path)
    account = first.add(make_account(daily_limit=2, max_in_flight=2))
    assert second.get(account.id) == account
    assert second.claim(claim()) is not None
    assert first.get(account.id).sent_count == 1
    first.update(account.replace(sender_name="Renamed"))
    assert second.get(account.id).sender_name == "Renamed"
    assert second.get(account.id).sent_count == 1
    assert first.claim(claim()) is not None
    assert second.claim(claim()) is None
    second.remove(account.id)
    assert first.accounts() == []


def test_threads_of_two_storage_objects_never_claim_past_the_daily_limit(
    path: Path,
) -> None:
    # The contract races threads on one object; two objects on one file share
    # only the file lock (like two processes).
    storages = [JSONStorage(path), JSONStorage(path)]
    account = storages[0].add(make_account(daily_limit=50, max_in_flight=100))
    answers = claim_in_threads(
        storages,
        lambda moment: claim(now=moment, account_id=account.id),
        threads=16,
        tries=5,
        complete=True,
    )
    assert_exactly_the_limit_granted(answers, JSONStorage(path).get(account.id), 50)


def test_a_held_lock_times_out_with_a_storage_error(path: Path) -> None:
    JSONStorage(path).add(make_account())
    holder = FileLock(path.with_name("accounts.json.lock"))
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with holder:
            held.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(StorageError, match="timed out") as caught:
            JSONStorage(path, timeout=0.2).accounts()
        assert caught.value.location == str(path)
    finally:
        done.set()
        thread.join()
    assert len(JSONStorage(path, timeout=5).accounts()) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_fresh_locks(path: Path) -> None:
    storage = JSONStorage(path)
    account = storage.add(make_account(daily_limit=5))
    # Fork while this process's thread lock is held, as when another thread is
    # inside an operation: the child must not inherit a lock nobody releases.
    with storage._thread_lock:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                lease = storage.claim(claim(now=NOW + timedelta(seconds=1)))
                code = 0 if lease is not None else 2
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert storage.get(account.id).sent_count == 1


# -- URLs ---------------------------------------------------------------------


def test_from_url_absolute_and_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absolute = JSONStorage.from_url(f"json://{tmp_path}/a.json")
    assert absolute.path == tmp_path / "a.json"
    monkeypatch.chdir(tmp_path)
    relative = JSONStorage.from_url("json://data/b.json")
    assert relative.path == tmp_path / "data" / "b.json"


@pytest.mark.parametrize("url", ["json://", "json:///", "json://folder/", "file:///a"])
def test_from_url_without_a_file_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        JSONStorage.from_url(url)
