"""JSONStorage against hostile files: every corrupt file is a StorageError that
names it, and is never rewritten; every path to one file shares one lock."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from contract import make_account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailpool import Claim, JSONStorage, Scope, StorageError

NOW = datetime(2024, 5, 17, 12, tzinfo=timezone.utc)

ITEM: dict[str, Any] = json.loads(make_account().model_dump_json())
ITEM["smtp"]["password"] = "app-password"
VALID: dict[str, Any] = {"version": 1, "accounts": [ITEM]}


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _assert_refused_and_untouched(path: Path, data: bytes) -> None:
    storage = JSONStorage(path)
    with pytest.raises(StorageError) as info:
        storage.accounts()
    assert str(path) in str(info.value)
    with pytest.raises(StorageError):
        storage.add(make_account("bob@example.com"))
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    "document",
    [
        {**VALID, "surprise": 1},  # an unexpected top-level key
        {"version": 1, "accounts": [{**ITEM, "surprise": 1}]},
        {
            "version": 1,
            "accounts": [{**ITEM, "count_day": "2024-13-45"}],
        },
        {
            "version": 1,
            "accounts": [{**ITEM, "min_wait_time": 1e308 * 10}],
        },
        {"version": 1, "accounts": [{**ITEM, "daily_limit": 10**30}]},
        {"version": 1, "accounts": [{**ITEM, "last_sent_at": "soon"}]},
        {"version": 1, "accounts": [{**ITEM, "tags": {"a": 1}}]},
        {"version": 1, "accounts": [{**ITEM, "smtp": "nope"}]},
        {"version": 1, "accounts": [[]]},
        {"version": True, "accounts": []},
        [],
    ],
)
def test_a_corrupt_document_is_a_storage_error(
    tmp_path: Path, document: object
) -> None:
    path = tmp_path / "accounts.json"
    data = json.dumps(document, allow_nan=True).encode()
    _write(path, data)
    _assert_refused_and_untouched(path, data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"version": 1, "accounts": [' + b"1" * 5000 + b"]}",  # a huge integer
        b"[" * 100_000 + b"]" * 100_000,  # deep nesting
        b'{"version": 1, "accounts": [{"email": "\\ud800"}]}',  # a lone surrogate
        b"\xff\xfe not utf-8",
        b"",
        b"   ",
    ],
    ids=["huge-int", "deep-nesting", "surrogate", "not-utf8", "empty", "blank"],
)
def test_a_corrupt_file_is_a_storage_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "accounts.json"
    _write(path, data)
    _assert_refused_and_untouched(path, data)


def _json_values() -> st.SearchStrategy[object]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=20,
    )


def _mutated_accounts() -> st.SearchStrategy[object]:
    """Valid documents with one field of the account replaced by anything."""
    fields = sorted(ITEM)
    return st.builds(
        lambda field, value: {
            "version": 1,
            "accounts": [{**ITEM, field: value}],
        },
        st.sampled_from(fields),
        _json_values(),
    )


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(document=st.one_of(_json_values(), _mutated_accounts()))
def test_fuzz_the_loader_raises_only_storage_errors(
    tmp_path: Path, document: object
) -> None:
    path = tmp_path / "fuzz.json"
    data = json.dumps(document).encode()
    _write(path, data)
    storage = JSONStorage(path)
    try:
        storage.accounts()
        storage.claim(Claim(Scope(), NOW))
    except StorageError as exc:
        assert str(path) in str(exc)
        assert path.read_bytes() == data  # refused files are never rewritten
    finally:
        path.unlink()


@given(data=st.binary(max_size=200))
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_fuzz_arbitrary_bytes_raise_only_storage_errors(
    tmp_path: Path, data: bytes
) -> None:
    path = tmp_path / "bytes.json"
    _write(path, data)
    try:
        JSONStorage(path).accounts()
    except StorageError:
        assert path.read_bytes() == data
    finally:
        path.unlink()


def test_a_symlink_and_its_target_share_one_lock_and_one_file(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real.json"
    link = tmp_path / "link.json"
    os.symlink(real, link)
    through_link, direct = JSONStorage(link), JSONStorage(real)
    account = through_link.add(make_account(daily_limit=3))

    granted = 0
    for storage in [through_link, direct] * 3:
        lease = storage.claim(Claim(Scope(), NOW))
        if lease is not None:
            storage.complete(lease, NOW)
            granted += 1

    assert granted == 3  # one limit, whichever path is used
    assert link.is_symlink()  # the link survives the writes
    assert direct.get(account.id).sent_count == 3
    assert through_link.path == direct.path == real
