"""InMemoryStorage: the contract (threads sharing one object included), bulk
imports, and its indexes staying right as accounts change."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contract import NOW, StorageContract, claim, make_account

from mailpool import AccountStatus, ConfigurationError, InMemoryStorage, Scope


class TestInMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self) -> Iterator[InMemoryStorage]:
        storage = InMemoryStorage()
        yield storage
        storage.close()


def test_from_url_accepts_only_memory() -> None:
    assert isinstance(InMemoryStorage.from_url("memory://"), InMemoryStorage)
    with pytest.raises(ConfigurationError, match="memory://"):
        InMemoryStorage.from_url("memory://somewhere")


def test_add_many_takes_twenty_thousand_accounts() -> None:
    storage = InMemoryStorage()
    batch = [
        make_account(f"user{n:05d}@example.com", owner=f"tenant-{n % 7}", tags={"t"})
        for n in range(20_000)
    ]
    assert storage.add_many(batch) == 20_000
    assert len(storage.accounts()) == 20_000
    assert storage.get_by_email("USER19999@example.com").id == batch[-1].id
    # Email uniqueness still holds, by the index.
    with pytest.raises(ConfigurationError):
        storage.add_many(
            [make_account("new@example.com"), make_account("User00042@example.com")]
        )
    assert len(storage.accounts(owner="tenant-3")) == len(batch[3::7])
    lease = storage.claim(claim(Scope(owner="tenant-3", tag="t")))
    assert lease is not None and lease.account.owner == "tenant-3"


def test_update_moves_an_account_between_owner_and_tag_indexes() -> None:
    storage = InMemoryStorage()
    account = storage.add(make_account(owner="acme", tags={"spring"}))
    other = storage.add(
        make_account("other@example.com", owner="acme", tags={"spring"})
    )
    storage.update(account.replace(owner="globex", tags={"autumn"}))
    assert [a.id for a in storage.accounts(owner="acme")] == [other.id]
    assert [a.id for a in storage.accounts(owner="globex")] == [account.id]
    assert [a.id for a in storage.accounts(tag="spring")] == [other.id]
    assert [a.id for a in storage.accounts(tag="autumn")] == [account.id]
    for scope, expected in [
        (Scope(owner="globex"), account.id),
        (Scope(tag="autumn"), account.id),
        (Scope(owner="acme", tag="spring"), other.id),
    ]:
        assert [a.id for a in storage.candidates(claim(scope))] == [expected]
        lease = storage.claim(claim(scope))
        assert lease is not None and lease.account_id == expected
        storage.complete(lease, NOW)
    assert storage.claim(claim(Scope(owner="globex", tag="spring"))) is None
    # The email index follows a change of address.
    storage.update(storage.get(account.id).replace(email="renamed@example.com"))
    assert storage.get_by_email("renamed@example.com").id == account.id
    storage.add(make_account("alice@example.com"))  # the old address is free


def test_remove_takes_an_account_out_of_every_index() -> None:
    storage = InMemoryStorage()
    gone = storage.add(make_account(owner="acme", tags={"spring"}))
    kept = storage.add(make_account("kept@example.com", owner="acme", tags={"spring"}))
    storage.remove(gone.id)
    assert [a.id for a in storage.accounts(owner="acme", tag="spring")] == [kept.id]
    for _ in range(20):
        for scope in (Scope(), Scope(owner="acme"), Scope(tag="spring")):
            assert [a.id for a in storage.candidates(claim(scope))] == [kept.id]
    lease = storage.claim(claim(Scope(tag="spring")))
    assert lease is not None and lease.account_id == kept.id
    storage.add(make_account("alice@example.com", status=AccountStatus.INACTIVE))
    assert storage.claim(claim(Scope(tag="spring"), account_id=gone.id)) is None
