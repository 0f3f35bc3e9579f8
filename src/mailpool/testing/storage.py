"""The behaviour every storage backend must have: one suite, run against each.

Subclass :class:`StorageContract` and override the ``storage`` fixture; pytest
then runs every test below against your backend::

    class TestMyStorage(StorageContract):
        @pytest.fixture
        def storage(self) -> Iterator[MyStorage]:
            s = MyStorage(...)   # empty, and private to this test
            yield s
            s.close()

The fixture must return an **empty** storage that no other test uses. A
backend that keeps accounts after :meth:`~mailpool.storage.Storage.close` (a
file, a database) should also override ``reopen``: return a callable that opens
a new storage object on the same location (``functools.partial(MyStorage,
...)``); the durability tests, and those where two objects share one location
(as two processes would), are skipped without it. The tests use fixed
datetimes (never the wall clock) and seeded random numbers, so they pass on
any day, in any time zone, and always the same way. The class has no ``Test``
prefix, so pytest collects it only through subclasses. It needs ``pytest``
(imported here, not by :mod:`mailpool.testing`); see docs/custom-storage.md::

    # conftest.py of your project: detailed assertion messages from the suite
    import pytest
    pytest.register_assert_rewrite("mailpool.testing.storage")

    # test_my_storage.py
    from mailpool.testing.storage import StorageContract

.. versionadded:: 0.2
"""

from __future__ import annotations

import inspect
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import SecretStr

from mailpool import (
    Account,
    AccountNotFound,
    AccountStatus,
    Claim,
    ConfigurationError,
    ConnectionType,
    Lease,
    OAuth2Credentials,
    Scope,
    SMTPSettings,
    Storage,
    StorageError,
    Strategy,
)
from mailpool.models import HEALTH_FIELDS, Failure, FailureKind, PauseKind
from mailpool.storage import RecordsFailures

__all__ = [
    "CHI_SQUARE_CRITICAL",
    "DAY",
    "NOW",
    "UNIFORM_CLAIMS",
    "Reopen",
    "StorageContract",
    "assert_exactly_the_limit_granted",
    "chi_square",
    "claim",
    "claim_in_threads",
    "make_account",
    "seconds",
]

NOW = datetime(2024, 5, 17, 12, 0, 0, tzinfo=timezone.utc)
"""The 'current' time of the tests: noon UTC on :data:`DAY`."""
DAY = NOW.date()
NEXT_DAY = NOW + timedelta(days=1)
YESTERDAY = DAY - timedelta(days=1)
SEED = 20240517
"""Seed of the random numbers of the claims: every run picks the same way."""


def make_account(email: str = "alice@example.com", **fields: Any) -> Account:
    """A valid account with an SMTP password; ``fields`` override anything."""
    fields.setdefault(
        "smtp",
        SMTPSettings(
            host="smtp.example.com",
            port=587,
            username=email,
            password="app-password-" + email.split("@")[0],
        ),
    )
    fields.setdefault("min_wait_time", 0.0)
    return Account(email=email, **fields)


def emails(accounts: Sequence[Account]) -> list[str]:
    return [account.email for account in accounts]


def ids(accounts: Sequence[Account]) -> set[str]:
    return {account.id for account in accounts}


def claim(scope: Scope | None = None, now: datetime = NOW, **fields: Any) -> Claim:
    """A :class:`Claim` at ``now`` (in every account by default), with seeded
    random numbers unless ``rng`` is given."""
    fields.setdefault("rng", random.Random(SEED))
    return Claim(scope=scope or Scope(), now=now, **fields)


def claim_and_complete(
    storage: Storage, moments: Sequence[datetime], **fields: Any
) -> list[str]:
    """Claim at each moment, completing each lease at once (at its moment):
    the ids claimed, in turn. One random generator serves all the claims.

    :raises AssertionError: when a claim gets no account.
    """
    rng = fields.pop("rng", random.Random(SEED))
    claimed = []
    for moment in moments:
        lease = storage.claim(claim(now=moment, rng=rng, **fields))
        assert lease is not None, f"no account to claim at {moment}"
        storage.complete(lease, moment)
        claimed.append(lease.account_id)
    return claimed


def seconds(*values: float) -> list[datetime]:
    """The moments :data:`NOW` + each of ``values`` seconds."""
    return [NOW + timedelta(seconds=value) for value in values]


Reopen = Callable[[], Storage]
"""Opens a new storage object on the location of the test's ``storage``."""

THREAD_START_TIMEOUT = 60.0
"""Seconds a racing thread waits for the others at the start barrier."""

CHI_SQUARE_CRITICAL = {9: 27.877, 19: 43.820}
"""Upper critical values of the chi-square distribution at p = 0.001, by
degrees of freedom: a uniform choice exceeds them once in a thousand runs."""


UNIFORM_CLAIMS = 2000
"""Claims of the uniformity tests: 200 per account, enough for the chi-square
test to catch a choice that favours some accounts by a fifth."""


def chi_square(counts: Counter[str], keys: Sequence[str]) -> float:
    """Pearson's statistic of ``counts`` against equal expected counts."""
    expected = sum(counts[key] for key in keys) / len(keys)
    return sum((counts[key] - expected) ** 2 / expected for key in keys)


def claim_in_threads(
    storages: Sequence[Storage],
    claim_at: Callable[[datetime], Claim],
    *,
    threads: int,
    tries: int,
    complete: bool,
) -> list[Lease | None]:
    """``threads`` threads, started together, each call ``claim(claim_at(
    moment))`` ``tries`` times; thread ``n`` uses ``storages[n % len(
    storages)]``. With ``complete``, each lease granted is completed at once,
    at its moment.

    Every call gets its own fixed moment of :data:`DAY` (a millisecond apart),
    so the moments reach the storage out of order, as from the clocks of
    several workers. :returns: every answer (the lease, or None when
    refused), in no particular order.
    :raises RuntimeError: from the first error, when a thread raised.
    """
    start = threading.Barrier(threads, timeout=THREAD_START_TIMEOUT)
    answers: list[Lease | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        storage = storages[index % len(storages)]
        try:
            start.wait()
            mine = []
            for attempt in range(tries):
                moment = NOW + timedelta(milliseconds=index * tries + attempt)
                lease = storage.claim(claim_at(moment))
                if lease is not None and complete:
                    storage.complete(lease, moment)
                mine.append(lease)
        except BaseException as exc:  # reported below, in the test's thread
            start.abort()
            with lock:
                errors.append(exc)
        else:
            with lock:
                answers.extend(mine)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {threads} threads failed") from errors[0]
    return answers


def assert_exactly_the_limit_granted(
    answers: Sequence[Lease | None], stored: Account, limit: int
) -> None:
    """``answers`` (from :func:`claim_in_threads` on one account, completing
    each lease, with more attempts than ``limit``) granted each of the
    ``limit`` units of :data:`DAY` exactly once, and ``stored`` (the account
    read back afterwards) counts them all and holds no slot."""
    granted = [answer for answer in answers if answer is not None]
    assert len(answers) > limit, "the race needs more attempts than the limit"
    assert len(granted) == limit, (
        f"{len(granted)} of {len(answers)} attempts granted; the limit is {limit}"
    )
    assert sorted(lease.account.sent_count for lease in granted) == list(
        range(1, limit + 1)
    )
    assert {lease.day for lease in granted} == {DAY}
    assert (stored.sent_count, stored.count_day, stored.in_flight) == (limit, DAY, 0)
    # The stamp is the latest delivery: it never moved back.
    assert stored.last_sent_at == max(lease.claimed_at for lease in granted)


PROTOCOL_METHODS = sorted(
    name
    for name, value in vars(Storage).items()
    if callable(value) and not name.startswith("_")
)
"""The methods of :class:`~mailpool.storage.Storage`."""


def _protocol_call(name: str) -> tuple[list[None], dict[str, None]]:
    """Placeholder arguments shaped like a call of ``Storage.<name>``:
    positional-only parameters by position, keyword-only ones by name."""
    parameters = list(inspect.signature(getattr(Storage, name)).parameters.values())
    args: list[None] = []
    kwargs: dict[str, None] = {}
    for parameter in parameters[1:]:  # after self
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = None
        else:
            args.append(None)
    return args, kwargs


class StorageContract:
    """Behaviour tests every :class:`~mailpool.storage.Storage` must pass."""

    @pytest.fixture
    def storage(self) -> Storage:
        """Override: return a new, empty storage private to one test."""
        raise NotImplementedError

    @pytest.fixture
    def reopen(self) -> Reopen | None:
        """Override for a durable backend: a callable that opens a new storage
        object on the location of ``storage``. None: nothing outlives close()."""
        return None

    @pytest.fixture
    def second(self, storage: Storage, reopen: Reopen | None) -> Iterator[Storage]:
        """Another storage object on the location of ``storage`` (as another
        process would open it); the test is skipped without ``reopen``."""
        if reopen is None:
            pytest.skip("this backend is not shared between storage objects")
        other = reopen()
        yield other
        other.close()

    # -- protocol --------------------------------------------------------------

    def test_satisfies_protocol(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)

    @pytest.mark.parametrize("name", PROTOCOL_METHODS)
    def test_methods_accept_the_protocol_calls(
        self, storage: Storage, name: str
    ) -> None:
        # isinstance() only checks that the names exist. Each method must also
        # accept the protocol's calls (positional arguments, keyword-only
        # filters by name); what it does is checked by the tests below.
        implementation = getattr(storage, name)
        assert callable(implementation)
        args, kwargs = _protocol_call(name)
        inspect.signature(implementation).bind(*args, **kwargs)

    def test_new_storage_is_empty(self, storage: Storage) -> None:
        assert storage.accounts() == []
        assert storage.candidates(claim()) == []
        assert storage.claim(claim()) is None

    def test_close_twice_keeps_everything_for_a_new_storage(
        self, storage: Storage, reopen: Reopen | None
    ) -> None:
        if reopen is None:
            pytest.skip("this backend keeps nothing after close()")
        account = storage.add(make_account(tags={"x"}))
        other = storage.add(make_account("other@example.com", daily_limit=1))
        lease = storage.claim(claim(account_id=other.id))
        assert lease is not None
        expected = storage.accounts()
        storage.close()
        storage.close()  # idempotent: no error the second time
        fresh = reopen()
        try:
            assert fresh.accounts() == expected
            assert fresh.get(account.id) == account
            stored = fresh.get(other.id)
            assert (stored.sent_count, stored.count_day, stored.in_flight) == (
                1,
                DAY,
                1,
            )
            assert stored.lease_until == lease.expires_at
            # The reopened storage enforces the stored count...
            fresh.complete(lease, NOW + timedelta(seconds=1))
            assert fresh.get(other.id).last_sent_at == NOW + timedelta(seconds=1)
            later = claim(now=NOW + timedelta(seconds=2), account_id=other.id)
            assert fresh.claim(later) is None
            # ... and picks among what was stored before.
            picked = fresh.claim(claim(now=NOW + timedelta(seconds=2)))
            assert picked is not None and picked.account_id == account.id
        finally:
            fresh.close()

    # -- add, get --------------------------------------------------------------

    def test_add_returns_the_account_and_get_finds_it(self, storage: Storage) -> None:
        account = make_account()
        assert storage.add(account) == account
        found = storage.get(account.id)
        assert isinstance(found, Account)
        assert found == account

    def test_get_missing_raises_account_not_found(self, storage: Storage) -> None:
        storage.add(make_account())
        with pytest.raises(AccountNotFound) as caught:
            storage.get("nope")
        assert isinstance(caught.value, KeyError)
        assert isinstance(caught.value, StorageError)

    def test_get_by_email_is_case_insensitive(self, storage: Storage) -> None:
        account = storage.add(make_account("Alice.Smith@Example.com"))
        storage.add(make_account("bob@example.com"))
        assert storage.get_by_email("alice.smith@example.com") == account
        assert storage.get_by_email("ALICE.SMITH@EXAMPLE.COM") == account
        assert storage.get_by_email("Alice.Smith@Example.com") == account

    def test_get_by_email_missing_raises_account_not_found(
        self, storage: Storage
    ) -> None:
        storage.add(make_account())
        with pytest.raises(AccountNotFound):
            storage.get_by_email("nobody@example.com")

    def test_add_duplicate_id_is_refused_and_nothing_changes(
        self, storage: Storage
    ) -> None:
        first = storage.add(make_account("alice@example.com", sender_name="First"))
        twin = make_account("other@example.com", id=first.id)
        with pytest.raises(ConfigurationError):
            storage.add(twin)
        assert storage.accounts() == [first]

    def test_add_duplicate_email_is_refused_case_insensitively(
        self, storage: Storage
    ) -> None:
        first = storage.add(make_account("alice@example.com"))
        with pytest.raises(ConfigurationError):
            storage.add(make_account("ALICE@example.com"))
        assert storage.accounts() == [first]

    def test_add_stores_usage_fields_as_given(self, storage: Storage) -> None:
        account = make_account(
            sent_count=7,
            count_day=DAY,
            last_sent_at=NOW - timedelta(minutes=5),
            in_flight=2,
            lease_until=NOW + timedelta(minutes=1),
        )
        storage.add(account)
        assert storage.get(account.id) == account

    def test_every_field_round_trips(self, storage: Storage) -> None:
        account = Account(
            id="acct-0001",
            email="Full.Fields@Example.org",
            sender_name="Full Fields Ünïcode",
            owner="acme",
            tags={"spring-campaign", "vip", "eu"},
            connection_type=ConnectionType.GMAIL,
            status=AccountStatus.ERROR,
            status_reason="535 authentication failed",
            daily_limit=123,
            min_wait_time=2.5,
            smtp=SMTPSettings(
                host="smtp.gmail.com",
                port=465,
                use_tls=False,
                use_ssl=True,
                username="full.fields",
                password="p@ss wörd",
            ),
            oauth2=OAuth2Credentials(
                access_token="ya29.access",
                refresh_token="1//refresh",
                token_expiry=datetime(2024, 5, 17, 13, 30, 15, 250000, timezone.utc),
                client_id="client-1.apps.example.com",
                client_secret="client-s3cret",
                token_url="https://oauth2.example.com/token",
                scope="https://mail.example.com/",
            ),
            max_in_flight=3,
            timezone="Europe/Paris",
            sent_count=4,
            count_day=DAY,
            last_sent_at=datetime(2024, 5, 17, 11, 59, 58, 123456, timezone.utc),
            in_flight=2,
            lease_until=datetime(2024, 5, 17, 12, 4, 30, 654321, timezone.utc),
        )
        storage.add(account)
        stored = storage.get(account.id)
        assert stored == account
        assert stored.tags == frozenset({"spring-campaign", "vip", "eu"})
        assert stored.oauth2 is not None and account.oauth2 is not None
        assert stored.oauth2.token_expiry == account.oauth2.token_expiry
        assert stored.oauth2.client_secret == SecretStr("client-s3cret")
        assert stored.last_sent_at == account.last_sent_at
        assert stored.last_sent_at is not None
        assert stored.last_sent_at.utcoffset() == timedelta(0)
        assert stored.lease_until == account.lease_until
        assert stored.count_day == DAY

    def test_optional_fields_round_trip_empty(self, storage: Storage) -> None:
        account = Account(
            email="minimal@example.com",
            smtp=SMTPSettings(host="relay.local", use_tls=False),
        )
        storage.add(account)
        assert storage.get(account.id) == account

    def test_secrets_round_trip(self, storage: Storage) -> None:
        account = make_account(
            smtp=SMTPSettings(host="smtp.example.com", username="u", password="s3cr3t"),
            oauth2=OAuth2Credentials(access_token="tok-A", refresh_token="tok-R"),
        )
        storage.add(account)
        stored = storage.get(account.id)
        assert isinstance(stored.smtp.password, SecretStr)
        assert stored.smtp.password.get_secret_value() == "s3cr3t"
        assert stored.oauth2 is not None
        assert stored.oauth2.access_token == SecretStr("tok-A")
        assert stored.oauth2.refresh_token == SecretStr("tok-R")
        assert "s3cr3t" not in repr(stored)

    # -- accounts() ------------------------------------------------------------

    def test_accounts_are_ordered_by_email(self, storage: Storage) -> None:
        for address in ["carol@example.com", "Bob@example.com", "alice@example.com"]:
            storage.add(make_account(address))
        assert emails(storage.accounts()) == [
            "alice@example.com",
            "Bob@example.com",
            "carol@example.com",
        ]

    def test_accounts_filter_by_owner(self, storage: Storage) -> None:
        storage.add(make_account("a@example.com", owner="acme"))
        storage.add(make_account("b@example.com", owner="globex"))
        storage.add(make_account("c@example.com"))
        assert emails(storage.accounts(owner="acme")) == ["a@example.com"]
        assert len(storage.accounts()) == 3

    def test_accounts_filter_by_tag(self, storage: Storage) -> None:
        storage.add(make_account("a@example.com", tags={"spring", "vip"}))
        storage.add(make_account("b@example.com", tags={"spring"}))
        storage.add(make_account("c@example.com", tags={"autumn"}))
        assert emails(storage.accounts(tag="spring")) == [
            "a@example.com",
            "b@example.com",
        ]
        assert emails(storage.accounts(tag="vip")) == ["a@example.com"]
        assert storage.accounts(tag="winter") == []

    def test_accounts_filter_by_status(self, storage: Storage) -> None:
        storage.add(make_account("a@example.com"))
        storage.add(make_account("b@example.com", status=AccountStatus.INACTIVE))
        storage.add(make_account("c@example.com", status=AccountStatus.ERROR))
        assert emails(storage.accounts(status=AccountStatus.ACTIVE)) == [
            "a@example.com"
        ]
        assert emails(storage.accounts(status=AccountStatus.ERROR)) == ["c@example.com"]

    def test_accounts_filters_combine(self, storage: Storage) -> None:
        storage.add(make_account("a@example.com", owner="acme", tags={"x"}))
        storage.add(make_account("b@example.com", owner="acme", tags={"y"}))
        storage.add(make_account("c@example.com", owner="globex", tags={"x"}))
        storage.add(
            make_account(
                "d@example.com",
                owner="acme",
                tags={"x"},
                status=AccountStatus.INACTIVE,
            )
        )
        found = storage.accounts(owner="acme", tag="x", status=AccountStatus.ACTIVE)
        assert emails(found) == ["a@example.com"]
        assert emails(storage.accounts(owner="acme", tag="x")) == [
            "a@example.com",
            "d@example.com",
        ]

    # -- update, remove --------------------------------------------------------

    def test_update_changes_settings(self, storage: Storage) -> None:
        account = storage.add(make_account(sender_name="Old", daily_limit=10))
        changed = account.replace(
            sender_name="New",
            daily_limit=20,
            tags={"new-tag"},
            status=AccountStatus.INACTIVE,
            smtp=SMTPSettings(host="smtp.other.com", username="u", password="new-pw"),
        )
        returned = storage.update(changed)
        assert returned == changed
        assert storage.get(account.id) == changed

    def test_update_keeps_the_stored_usage_counters(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=10, max_in_flight=2))
        first = storage.claim(claim(account_id=account.id))
        assert first is not None
        storage.complete(first, NOW + timedelta(seconds=1))
        later = NOW + timedelta(seconds=2)
        second = storage.claim(claim(now=later, account_id=account.id))
        assert second is not None
        usage = (2, DAY, NOW + timedelta(seconds=1), 1, second.expires_at)
        # An update built from a stale copy (count 0, never sent) or a copy that
        # tries to set the counters must not change them.
        stale = account.replace(sender_name="Renamed")
        forged = account.replace(
            sender_name="Forged",
            sent_count=0,
            count_day=None,
            last_sent_at=None,
            in_flight=0,
            lease_until=None,
        )
        for attempt in (stale, forged):
            returned = storage.update(attempt)
            stored = storage.get(account.id)
            assert stored.sender_name == attempt.sender_name
            assert (
                stored.sent_count,
                stored.count_day,
                stored.last_sent_at,
                stored.in_flight,
                stored.lease_until,
            ) == usage
            assert returned == stored

    def test_update_of_the_settings_of_the_send_path_takes_effect(
        self, storage: Storage
    ) -> None:
        account = storage.add(make_account(max_in_flight=1, owner="acme"))
        assert storage.claim(claim(account_id=account.id)) is not None
        assert storage.claim(claim(account_id=account.id)) is None  # slot taken
        storage.update(account.replace(max_in_flight=2, owner="globex", tags={"x"}))
        lease = storage.claim(claim(Scope(owner="globex", tag="x")))
        assert lease is not None and lease.account.in_flight == 2
        assert storage.claim(claim(Scope(owner="acme"))) is None

    def test_update_missing_raises_account_not_found(self, storage: Storage) -> None:
        with pytest.raises(AccountNotFound):
            storage.update(make_account())
        assert storage.accounts() == []

    def test_update_to_another_accounts_email_is_refused(
        self, storage: Storage
    ) -> None:
        alice = storage.add(make_account("alice@example.com"))
        bob = storage.add(make_account("bob@example.com"))
        with pytest.raises(ConfigurationError):
            storage.update(bob.replace(email="ALICE@example.com", sender_name="X"))
        assert storage.get(bob.id) == bob
        assert storage.get(alice.id) == alice

    def test_update_may_change_the_case_of_its_own_email(
        self, storage: Storage
    ) -> None:
        account = storage.add(make_account("alice@example.com"))
        storage.update(account.replace(email="Alice@Example.com"))
        assert storage.get(account.id).email == "Alice@Example.com"
        assert storage.get_by_email("alice@example.com").id == account.id

    def test_remove_deletes_the_account(self, storage: Storage) -> None:
        alice = storage.add(make_account("alice@example.com"))
        bob = storage.add(make_account("bob@example.com"))
        storage.remove(alice.id)
        assert storage.accounts() == [bob]
        with pytest.raises(AccountNotFound):
            storage.get(alice.id)
        # The email is free again.
        storage.add(make_account("alice@example.com"))

    def test_remove_missing_raises_account_not_found(self, storage: Storage) -> None:
        with pytest.raises(AccountNotFound):
            storage.remove("nope")

    # -- add_many() ------------------------------------------------------------

    def test_add_many_stores_every_account(self, storage: Storage) -> None:
        batch = [
            make_account(f"user{n:02d}@example.com", tags={"t"} if n % 2 else set())
            for n in range(50)
        ]
        assert storage.add_many(iter(batch)) == 50  # any iterable
        assert storage.accounts() == sorted(batch, key=lambda a: a.email)
        assert ids(storage.accounts(tag="t")) == ids(batch[1::2])
        assert storage.add_many([]) == 0
        assert len(storage.accounts()) == 50

    @pytest.mark.parametrize(
        "clash", ["id in the batch", "email in the batch", "stored id", "stored email"]
    )
    def test_add_many_stores_all_or_none(self, storage: Storage, clash: str) -> None:
        stored = storage.add(make_account("stored@example.com"))
        batch = [make_account(f"new{n}@example.com", tags={"t"}) for n in range(5)]
        # The clash comes last: every other account would already be written.
        if clash == "id in the batch":
            batch.append(make_account("other@example.com", id=batch[0].id))
        elif clash == "email in the batch":
            batch.append(make_account("NEW0@example.com"))
        elif clash == "stored id":
            batch.append(make_account("other@example.com", id=stored.id))
        else:
            batch.append(make_account("STORED@example.com"))
        with pytest.raises(ConfigurationError):
            storage.add_many(batch)
        assert storage.accounts() == [stored]
        assert storage.accounts(tag="t") == []
        assert storage.claim(claim(Scope(tag="t"))) is None
        # Nothing was half stored: the batch goes in once the clash is gone.
        assert storage.add_many(batch[:-1]) == 5

    # -- claim(): what it counts -----------------------------------------------

    def test_claim_counts_one_send_and_takes_a_send_slot(
        self, storage: Storage
    ) -> None:
        previous = NOW - timedelta(hours=1)
        account = storage.add(
            make_account(sent_count=2, count_day=DAY, last_sent_at=previous)
        )
        lease = storage.claim(claim(lease_seconds=60))
        assert isinstance(lease, Lease)
        assert lease.account_id == account.id
        assert (lease.day, lease.claimed_at, lease.expires_at) == (
            DAY,
            NOW,
            NOW + timedelta(seconds=60),
        )
        stored = storage.get(account.id)
        assert lease.account == stored
        assert (
            stored.sent_count,
            stored.count_day,
            stored.in_flight,
            stored.lease_until,
        ) == (3, DAY, 1, NOW + timedelta(seconds=60))
        # A claim is not a delivery: the stamp stays.
        assert stored.last_sent_at == previous

    def test_claim_refuses_accounts_that_are_not_active(self, storage: Storage) -> None:
        for status in (
            AccountStatus.INACTIVE,
            AccountStatus.ERROR,
            AccountStatus.PENDING,
        ):
            storage.add(make_account(f"{status.value}@example.com", status=status))
        for strategy in Strategy:
            assert storage.claim(claim(strategy=strategy)) is None
        assert all(a.sent_count == a.in_flight == 0 for a in storage.accounts())
        active = storage.add(make_account("active@example.com"))
        lease = storage.claim(claim())
        assert lease is not None and lease.account_id == active.id

    def test_claim_refuses_an_account_at_its_daily_limit(
        self, storage: Storage
    ) -> None:
        account = storage.add(make_account(daily_limit=2))
        assert claim_and_complete(storage, seconds(0, 1)) == [account.id] * 2
        for strategy in Strategy:
            later = NOW + timedelta(seconds=2)
            assert storage.claim(claim(now=later, strategy=strategy)) is None
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.in_flight) == (2, 0)
        # Every account's limit is its own.
        other = storage.add(make_account("other@example.com", daily_limit=1))
        assert claim_and_complete(storage, seconds(3)) == [other.id]

    def test_claim_refuses_a_zero_daily_limit(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=0))
        assert storage.claim(claim()) is None
        assert storage.claim(claim(account_id=account.id)) is None
        assert storage.get(account.id) == account

    def test_a_count_from_an_earlier_day_reads_zero(self, storage: Storage) -> None:
        account = storage.add(
            make_account(daily_limit=5, sent_count=5, count_day=YESTERDAY)
        )
        lease = storage.claim(claim())
        assert lease is not None and lease.account_id == account.id
        assert (lease.account.sent_count, lease.account.count_day) == (1, DAY)

    def test_claims_start_over_the_next_day(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=1))
        assert claim_and_complete(storage, [NOW]) == [account.id]
        assert storage.claim(claim(now=NOW + timedelta(hours=1))) is None
        [candidate] = storage.candidates(claim(now=NEXT_DAY))
        assert (candidate.sent_count, candidate.count_day) == (0, NEXT_DAY.date())
        lease = storage.claim(claim(now=NEXT_DAY))
        assert lease is not None and lease.day == NEXT_DAY.date()
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.count_day) == (1, NEXT_DAY.date())

    def test_each_account_counts_on_the_day_of_its_time_zone(
        self, storage: Storage
    ) -> None:
        # 16:00 UTC on the 17th is 01:00 on the 18th in Tokyo and 12:00 on the
        # 17th in New York: Tokyo's count of the 17th has ended, New York's
        # has not.
        moment = datetime(2024, 5, 17, 16, 0, tzinfo=timezone.utc)
        tokyo = storage.add(
            make_account(
                "tokyo@example.com",
                timezone="Asia/Tokyo",
                daily_limit=3,
                sent_count=3,
                count_day=DAY,
            )
        )
        newyork = storage.add(
            make_account(
                "newyork@example.com",
                timezone="America/New_York",
                daily_limit=3,
                sent_count=3,
                count_day=DAY,
            )
        )
        [candidate] = storage.candidates(claim(now=moment))
        assert candidate.id == tokyo.id
        assert (candidate.sent_count, candidate.count_day) == (0, NEXT_DAY.date())
        for strategy in Strategy:
            lease = storage.claim(claim(now=moment, strategy=strategy))
            assert lease is not None and lease.account_id == tokyo.id
            assert lease.day == NEXT_DAY.date()  # Tokyo's day
            storage.release(lease, moment)
        lease = storage.claim(claim(now=moment))
        assert lease is not None
        assert (lease.account.sent_count, lease.account.count_day) == (
            1,
            NEXT_DAY.date(),
        )
        # New York's day ends at 04:00 UTC on the 18th.
        late = datetime(2024, 5, 18, 4, 0, tzinfo=timezone.utc)
        just_before = late - timedelta(seconds=1)
        assert storage.claim(claim(now=just_before, account_id=newyork.id)) is None
        lease = storage.claim(claim(now=late, account_id=newyork.id))
        assert lease is not None and lease.day == NEXT_DAY.date()

    def test_a_count_of_a_later_day_still_counts(self, storage: Storage) -> None:
        # Another worker's clock is ahead: it already counts tomorrow. A clock
        # that is behind must not start today's count over.
        account = storage.add(
            make_account(daily_limit=2, sent_count=1, count_day=NEXT_DAY.date())
        )
        [candidate] = storage.candidates(claim())
        assert (candidate.sent_count, candidate.count_day) == (1, NEXT_DAY.date())
        lease = storage.claim(claim())
        assert lease is not None and lease.day == NEXT_DAY.date()
        assert (lease.account.sent_count, lease.account.count_day) == (
            2,
            NEXT_DAY.date(),
        )
        storage.complete(lease, NOW)
        assert storage.claim(claim(now=NOW + timedelta(seconds=1))) is None
        assert storage.get(account.id).sent_count == 2

    def test_update_of_the_time_zone_moves_the_end_of_the_count(
        self, storage: Storage
    ) -> None:
        account = storage.add(make_account(daily_limit=1, sent_count=1, count_day=DAY))
        moment = datetime(2024, 5, 17, 16, 0, tzinfo=timezone.utc)
        assert storage.claim(claim(now=moment)) is None  # UTC: still the 17th
        storage.update(account.replace(timezone="Asia/Tokyo"))
        lease = storage.claim(claim(now=moment))  # Tokyo: the 18th
        assert lease is not None and lease.day == NEXT_DAY.date()

    # -- the minimum wait counts from the delivery -----------------------------

    def test_min_wait_counts_from_the_completion(self, storage: Storage) -> None:
        account = storage.add(make_account(min_wait_time=60))
        lease = storage.claim(claim())
        assert lease is not None
        delivered = NOW + timedelta(seconds=10)  # a slow connect, then delivery
        storage.complete(lease, delivered)
        stored = storage.get(account.id)
        assert (stored.last_sent_at, stored.in_flight, stored.sent_count) == (
            delivered,
            0,
            1,
        )
        for wait in (0.0, 30.0, 59.999):
            moment = delivered + timedelta(seconds=wait)
            assert storage.claim(claim(now=moment)) is None
            assert storage.candidates(claim(now=moment)) == []
        assert storage.claim(claim(now=delivered + timedelta(seconds=60))) is not None

    def test_min_wait_does_not_count_from_the_claim(self, storage: Storage) -> None:
        account = storage.add(make_account(min_wait_time=60, max_in_flight=2))
        first = storage.claim(claim())
        # A second after the first claim, before any delivery: no wait yet.
        second = storage.claim(claim(now=NOW + timedelta(seconds=1)))
        assert first is not None and second is not None
        storage.complete(first, NOW + timedelta(seconds=5))
        storage.complete(second, NOW + timedelta(seconds=3))  # out of order
        assert storage.get(account.id).last_sent_at == NOW + timedelta(seconds=5)
        assert storage.claim(claim(now=NOW + timedelta(seconds=64))) is None
        assert storage.claim(claim(now=NOW + timedelta(seconds=65))) is not None

    def test_min_wait_applies_to_a_stored_delivery(self, storage: Storage) -> None:
        storage.add(
            make_account(
                "waiting@example.com",
                min_wait_time=60,
                last_sent_at=NOW - timedelta(seconds=30),
            )
        )
        storage.add(
            make_account(
                "rested@example.com",
                min_wait_time=60,
                last_sent_at=NOW - timedelta(seconds=60),
            )
        )
        assert emails(storage.candidates(claim())) == ["rested@example.com"]
        later = storage.candidates(claim(now=NOW + timedelta(seconds=30)))
        assert sorted(emails(later)) == ["rested@example.com", "waiting@example.com"]

    def test_zero_min_wait_ignores_a_stamp_from_a_clock_running_ahead(
        self, storage: Storage
    ) -> None:
        ahead = NOW + timedelta(seconds=5)  # another worker's clock runs ahead
        account = storage.add(make_account(min_wait_time=0, last_sent_at=ahead))
        lease = storage.claim(claim())
        assert lease is not None and lease.account_id == account.id
        storage.complete(lease, NOW)
        assert storage.get(account.id).last_sent_at == ahead  # never back

    # -- send slots and leases --------------------------------------------------

    def test_max_in_flight_limits_the_leases_at_once(self, storage: Storage) -> None:
        account = storage.add(make_account(max_in_flight=2))
        first = storage.claim(claim())
        second = storage.claim(claim(now=NOW + timedelta(seconds=1)))
        assert first is not None and second is not None
        assert second.account.in_flight == 2
        assert storage.claim(claim(now=NOW + timedelta(seconds=2))) is None
        assert storage.candidates(claim(now=NOW + timedelta(seconds=2))) == []
        storage.complete(first, NOW + timedelta(seconds=3))  # frees a slot
        assert storage.get(account.id).in_flight == 1
        third = storage.claim(claim(now=NOW + timedelta(seconds=4)))
        assert third is not None
        assert storage.claim(claim(now=NOW + timedelta(seconds=5))) is None
        storage.release(second, NOW + timedelta(seconds=6))  # frees one too
        assert storage.claim(claim(now=NOW + timedelta(seconds=7))) is not None
        stored = storage.get(account.id)
        # first, third and the last count; second was given back.
        assert (stored.sent_count, stored.in_flight) == (3, 2)

    def test_a_lease_never_ended_runs_out(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=5))
        lease = storage.claim(claim(lease_seconds=60))
        assert lease is not None
        # The worker died: nobody completes or releases the lease.
        before = NOW + timedelta(seconds=59)
        assert storage.claim(claim(now=before)) is None
        assert storage.candidates(claim(now=before)) == []
        newer = storage.claim(claim(now=lease.expires_at, lease_seconds=60))
        assert newer is not None
        stored = storage.get(account.id)
        # The dead lease's unit stays counted; its slot is the newer lease's.
        assert (stored.sent_count, stored.in_flight, stored.lease_until) == (
            2,
            1,
            newer.expires_at,
        )

    def test_ending_a_lease_that_ran_out_keeps_the_newer_leases_slot(
        self, storage: Storage
    ) -> None:
        account = storage.add(make_account(daily_limit=5))
        old = storage.claim(claim(lease_seconds=60))
        newer = storage.claim(claim(now=NOW + timedelta(seconds=60), lease_seconds=60))
        assert old is not None and newer is not None
        # The old lease's worker was only slow: it completes after the expiry.
        storage.complete(old, NOW + timedelta(seconds=61))
        stored = storage.get(account.id)
        assert (stored.in_flight, stored.sent_count, stored.last_sent_at) == (
            1,
            2,
            NOW + timedelta(seconds=61),
        )
        assert storage.claim(claim(now=NOW + timedelta(seconds=62))) is None
        storage.complete(newer, NOW + timedelta(seconds=63))
        assert storage.claim(claim(now=NOW + timedelta(seconds=64))) is not None

    def test_the_latest_expiry_of_two_leases_stays(self, storage: Storage) -> None:
        account = storage.add(make_account(max_in_flight=2))
        long = storage.claim(claim(lease_seconds=600))
        short = storage.claim(claim(now=NOW + timedelta(seconds=1), lease_seconds=60))
        assert long is not None and short is not None
        assert storage.get(account.id).lease_until == long.expires_at

    # -- release() -------------------------------------------------------------

    def test_release_gives_the_unit_back_and_frees_the_slot(
        self, storage: Storage
    ) -> None:
        previous = NOW - timedelta(hours=2)
        account = storage.add(
            make_account(daily_limit=1, min_wait_time=3600, last_sent_at=previous)
        )
        lease = storage.claim(claim())
        assert lease is not None
        storage.release(lease, NOW + timedelta(seconds=1))
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.in_flight, stored.last_sent_at) == (
            0,
            0,
            previous,
        )
        # The unit, the slot and the wait are really given back.
        assert storage.claim(claim(now=NOW + timedelta(seconds=2))) is not None

    def test_release_after_a_rollover_changes_nothing(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=5))
        yesterdays = storage.claim(claim())
        todays = storage.claim(claim(now=NEXT_DAY))
        assert yesterdays is not None and todays is not None
        before = storage.get(account.id)
        storage.release(yesterdays, NEXT_DAY + timedelta(seconds=1))
        assert storage.get(account.id) == before
        assert (before.sent_count, before.count_day, before.in_flight) == (
            1,
            NEXT_DAY.date(),
            1,
        )

    def test_ending_a_lease_of_a_removed_account_does_nothing(
        self, storage: Storage
    ) -> None:
        account = storage.add(make_account(max_in_flight=2))
        other = storage.add(make_account("other@example.com"))
        first = storage.claim(claim(account_id=account.id))
        second = storage.claim(claim(account_id=account.id))
        assert first is not None and second is not None
        storage.remove(account.id)
        storage.complete(first, NOW + timedelta(seconds=1))
        storage.release(second, NOW + timedelta(seconds=1))
        assert storage.accounts() == [other]

    # -- which accounts a claim may take ---------------------------------------

    def test_claim_skips_excluded_accounts(self, storage: Storage) -> None:
        a, b, c = (storage.add(make_account(f"{name}@example.com")) for name in "abc")
        for strategy in Strategy:
            claimed = claim_and_complete(
                storage,
                seconds(0, 1, 2, 3),
                strategy=strategy,
                exclude=frozenset({a.id, b.id}),
            )
            assert claimed == [c.id] * 4
        assert storage.claim(claim(exclude=frozenset({a.id, b.id, c.id}))) is None
        assert storage.claim(claim(account_id=a.id, exclude=frozenset({a.id}))) is None
        assert storage.candidates(claim(exclude=frozenset({a.id, b.id}))) == [
            storage.get(c.id)
        ]

    def test_claim_of_a_named_account(self, storage: Storage) -> None:
        mine = storage.add(make_account("mine@example.com", owner="acme"))
        off = storage.add(make_account("off@example.com", status="inactive"))
        strategy = Strategy.ROUND_ROBIN  # ignored for a named account
        lease = storage.claim(claim(account_id=mine.id, strategy=strategy))
        assert lease is not None and lease.account_id == mine.id
        storage.complete(lease, NOW)
        assert storage.claim(claim(account_id=off.id)) is None  # not active
        assert storage.claim(claim(Scope(owner="globex"), account_id=mine.id)) is None
        assert storage.claim(claim(account_id="no-such-id")) is None
        named = Scope(owner="acme", account_ids=frozenset({mine.id}))
        lease = storage.claim(claim(named, account_id=mine.id))
        assert lease is not None and lease.account_id == mine.id
        assert storage.claim(claim(account_id=mine.id)) is None  # its slot is taken

    @pytest.mark.parametrize("strategy", list(Strategy))
    def test_claims_stay_in_their_scope(
        self, storage: Storage, strategy: Strategy
    ) -> None:
        a = storage.add(make_account("a@example.com", owner="acme", tags={"x"}))
        b = storage.add(make_account("b@example.com", owner="acme", tags={"y"}))
        c = storage.add(make_account("c@example.com", owner="globex", tags={"x", "y"}))
        d = storage.add(make_account("d@example.com"))
        storage.add(make_account("e@example.com", owner="acme", status="inactive"))
        cases = [
            (Scope(), {a.id, b.id, c.id, d.id}),
            (Scope(owner="acme"), {a.id, b.id}),
            (Scope(tag="x"), {a.id, c.id}),
            (Scope(tag="y"), {b.id, c.id}),
            (Scope(owner="acme", tag="x"), {a.id}),
            (Scope(account_ids=frozenset({b.id, c.id, "unknown-id"})), {b.id, c.id}),
            (Scope(owner="globex", account_ids=frozenset({a.id, c.id})), {c.id}),
            (Scope(tag="x", account_ids=frozenset({a.id, b.id})), {a.id}),
            (Scope(account_ids=frozenset()), set()),
            (Scope(owner="initech"), set()),
            (Scope(tag="z"), set()),
        ]
        for n, (scope, expected) in enumerate(cases):
            moment = NOW + timedelta(minutes=n)
            assert ids(storage.candidates(claim(scope, moment))) == expected, scope
            # Claim until nothing is left, each account once (excluded after).
            claimed: list[str] = []
            while True:
                taken = frozenset(claimed)
                lease = storage.claim(
                    claim(scope, moment, strategy=strategy, exclude=taken)
                )
                if lease is None:
                    break
                assert lease.account_id not in taken
                claimed.append(lease.account_id)
                storage.complete(lease, moment)
                assert len(claimed) <= len(expected), (scope, claimed)
            assert set(claimed) == expected, scope

    # -- candidates() ----------------------------------------------------------

    def test_candidates_are_at_most_limit_allowed_accounts(
        self, storage: Storage
    ) -> None:
        storage.add_many(
            make_account(
                f"user{n:02d}@example.com",
                owner="acme" if n % 2 else "globex",
                tags={"x"} if n % 3 == 0 else set(),
            )
            for n in range(40)
        )
        storage.add(make_account("off@example.com", owner="acme", status="inactive"))
        acme = ids(storage.accounts(owner="acme", status=AccountStatus.ACTIVE))
        assert len(acme) == 20
        for seed in range(5):
            sample = storage.candidates(
                claim(Scope(owner="acme"), rng=random.Random(seed)), limit=8
            )
            assert len(sample) == 8
            assert len(ids(sample)) == 8
            assert ids(sample) <= acme
        # Fewer allowed than the limit: all of them.
        tagged = ids(storage.accounts(owner="acme", tag="x"))
        assert len(tagged) == 7
        assert ids(storage.candidates(claim(Scope(owner="acme", tag="x")))) == tagged
        excluded = frozenset(sorted(acme)[:15])
        rest = storage.candidates(claim(Scope(owner="acme"), exclude=excluded))
        assert ids(rest) == acme - excluded
        one = sorted(acme)[0]
        assert ids(storage.candidates(claim(account_id=one))) == {one}
        assert storage.candidates(claim(), limit=0) == []

    def test_candidates_are_the_accounts_a_claim_may_take(
        self, storage: Storage
    ) -> None:
        storage.add(
            make_account("full@example.com", daily_limit=1, sent_count=1, count_day=DAY)
        )
        storage.add(
            make_account(
                "waiting@example.com",
                min_wait_time=60,
                last_sent_at=NOW - timedelta(seconds=1),
            )
        )
        storage.add(make_account("busy@example.com", in_flight=1, lease_until=NEXT_DAY))
        storage.add(make_account("off@example.com", status="error"))
        expired = storage.add(
            make_account(
                "expired@example.com",
                in_flight=1,
                lease_until=NOW,
                sent_count=2,
                count_day=YESTERDAY,
            )
        )
        [found] = storage.candidates(claim())
        # Counts as of the claim's day, and nothing stored changes.
        assert found == expired.as_of(DAY)
        assert (found.sent_count, found.count_day) == (0, DAY)
        assert storage.get(expired.id) == expired

    # -- strategies ------------------------------------------------------------

    def test_random_claims_are_uniform(self, storage: Storage) -> None:
        # Slots enough to need no completion: one write per claim.
        accounts = [
            make_account(
                f"user{n}@example.com",
                id=f"acct-{n}",
                daily_limit=10_000,
                max_in_flight=1000,
            )
            for n in range(10)
        ]
        storage.add_many(accounts)
        rng = random.Random(SEED)
        counts: Counter[str] = Counter()
        for n in range(UNIFORM_CLAIMS):
            lease = storage.claim(claim(now=NOW + timedelta(milliseconds=n), rng=rng))
            assert lease is not None
            counts[lease.account_id] += 1
        statistic = chi_square(counts, [a.id for a in accounts])
        assert statistic < CHI_SQUARE_CRITICAL[9], (statistic, counts)

    def test_random_claims_in_a_tag_are_uniform(self, storage: Storage) -> None:
        accounts = [
            make_account(
                f"user{n}@example.com",
                id=f"acct-{n}",
                daily_limit=10_000,
                tags={"t"} if n % 2 else set(),
            )
            for n in range(20)
        ]
        storage.add_many(accounts)
        tagged = [a.id for a in accounts if "t" in a.tags]
        moments = [NOW + timedelta(milliseconds=n) for n in range(UNIFORM_CLAIMS // 2)]
        # Completed at once, as a pool does.
        counts = Counter(claim_and_complete(storage, moments, scope=Scope(tag="t")))
        assert set(counts) == set(tagged)
        statistic = chi_square(counts, tagged)
        assert statistic < CHI_SQUARE_CRITICAL[9], (statistic, counts)

    @pytest.mark.parametrize(
        "scope", [Scope(), Scope(owner="acme"), Scope(tag="t")], ids=str
    )
    def test_round_robin_takes_every_account_in_turn(
        self, storage: Storage, scope: Scope
    ) -> None:
        storage.add_many(
            make_account(f"user{n}@example.com", owner="acme", tags={"t"})
            for n in range(4)
        )
        storage.add(make_account("elsewhere@example.com", owner="globex"))
        in_scope = sorted(a.id for a in storage.accounts() if scope.matches(a))
        size = len(in_scope)
        moments = seconds(*range(3 * size))
        claimed = claim_and_complete(
            storage, moments, scope=scope, strategy=Strategy.ROUND_ROBIN
        )
        turns = [claimed[n : n + size] for n in range(0, len(claimed), size)]
        assert sorted(turns[0]) == in_scope
        assert turns[1] == turns[0] and turns[2] == turns[0]

    def test_round_robin_skips_accounts_that_may_not_be_claimed(
        self, storage: Storage
    ) -> None:
        storage.add_many(make_account(f"{name}@example.com") for name in "abc")
        robin = Strategy.ROUND_ROBIN
        first = claim_and_complete(storage, seconds(0, 1, 2), strategy=robin)
        assert len(set(first)) == 3
        storage.update(storage.get(first[1]).replace(status=AccountStatus.INACTIVE))
        then = claim_and_complete(storage, seconds(3, 4, 5, 6), strategy=robin)
        assert then == [first[0], first[2], first[0], first[2]]

    def test_round_robin_turns_are_shared_by_storage_objects(
        self, storage: Storage, second: Storage
    ) -> None:
        storage.add_many(make_account(f"user{n}@example.com") for n in range(4))
        claimed = []
        for n, moment in enumerate(seconds(*range(12))):
            worker = (storage, second)[n % 2]  # two processes, taking turns
            lease = worker.claim(claim(now=moment, strategy=Strategy.ROUND_ROBIN))
            assert lease is not None
            worker.complete(lease, moment)
            claimed.append(lease.account_id)
        assert sorted(claimed[:4]) == sorted(ids(storage.accounts()))
        assert claimed[4:8] == claimed[:4] and claimed[8:] == claimed[:4]

    @pytest.mark.parametrize(
        "scope", [Scope(), Scope(owner="acme"), Scope(tag="t")], ids=str
    )
    def test_least_used_takes_the_account_with_the_fewest_sends_today(
        self, storage: Storage, scope: Scope
    ) -> None:
        for name, count in (("three", 3), ("one", 1), ("two", 2), ("four", 4)):
            storage.add(
                make_account(
                    f"{name}@example.com",
                    owner="acme",
                    tags={"t"},
                    sent_count=count,
                    count_day=DAY,
                )
            )
        # Nine sends yesterday: none today.
        storage.add(
            make_account(
                "stale@example.com",
                owner="acme",
                tags={"t"},
                sent_count=9,
                count_day=YESTERDAY,
            )
        )
        storage.add(make_account("elsewhere@example.com", owner="globex"))
        sent = {a.id: a.sent_on(DAY) for a in storage.accounts() if scope.matches(a)}
        rng = random.Random(SEED)
        for moment in seconds(*range(15)):
            lease = storage.claim(
                claim(scope, moment, strategy=Strategy.LEAST_USED, rng=rng)
            )
            assert lease is not None
            assert sent[lease.account_id] == min(sent.values()), (sent, lease)
            sent[lease.account_id] += 1
            storage.complete(lease, moment)
        # A release gives the unit back: the account is least used again.
        lowest = min(sent, key=lambda key: (sent[key], key))
        lease = storage.claim(
            claim(scope, NOW + timedelta(minutes=1), strategy=Strategy.LEAST_USED)
        )
        assert lease is not None and sent[lease.account_id] == sent[lowest]
        storage.release(lease, NOW + timedelta(minutes=1))
        again = storage.claim(
            claim(scope, NOW + timedelta(minutes=2), strategy=Strategy.LEAST_USED)
        )
        assert again is not None and sent[again.account_id] == sent[lowest]

    # -- races -----------------------------------------------------------------

    def test_threads_never_claim_past_the_daily_limit(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=50, max_in_flight=1000))
        answers = claim_in_threads(
            [storage],
            lambda moment: claim(now=moment, account_id=account.id),
            threads=16,
            tries=5,
            complete=True,
        )
        assert_exactly_the_limit_granted(answers, storage.get(account.id), 50)
        assert storage.claim(claim(now=NOW + timedelta(hours=1))) is None

    def test_threads_never_hold_more_leases_than_max_in_flight(
        self, storage: Storage
    ) -> None:
        account = storage.add(make_account(daily_limit=1000, max_in_flight=5))
        answers = claim_in_threads(
            [storage],
            lambda moment: claim(now=moment, rng=random.Random(moment.microsecond)),
            threads=16,
            tries=3,
            complete=False,
        )
        assert len([answer for answer in answers if answer is not None]) == 5
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.in_flight) == (5, 5)

    def test_threads_get_every_unit_of_a_scope(self, storage: Storage) -> None:
        # 64 claims for 40 units: every unit is claimed exactly once, so no
        # claim was refused while an account had one left.
        accounts = [
            storage.add(
                make_account(f"user{n}@example.com", daily_limit=10, max_in_flight=64)
            )
            for n in range(4)
        ]
        answers = claim_in_threads(
            [storage],
            lambda moment: claim(now=moment, rng=random.Random(moment.microsecond)),
            threads=16,
            tries=4,
            complete=True,
        )
        granted = Counter(lease.account_id for lease in answers if lease is not None)
        assert granted == {account.id: 10 for account in accounts}

    # -- reset_daily_counts() --------------------------------------------------

    def test_reset_daily_counts_resets_every_account(self, storage: Storage) -> None:
        a = storage.add(make_account("a@example.com", daily_limit=1))
        b = storage.add(make_account("b@example.com", owner="acme"))
        idle = storage.add(make_account("idle@example.com"))
        for account in (a, b):
            assert claim_and_complete(storage, [NOW], account_id=account.id)
        assert storage.reset_daily_counts() == 2
        for account in (a, b, idle):
            assert storage.get(account.id).sent_count == 0
        # The limit is available again.
        later = NOW + timedelta(seconds=1)
        assert claim_and_complete(storage, [later], account_id=a.id) == [a.id]
        assert storage.reset_daily_counts() == 1
        assert storage.reset_daily_counts() == 0

    def test_reset_daily_counts_by_owner(self, storage: Storage) -> None:
        mine = storage.add(make_account("a@example.com", owner="acme", tags={"t"}))
        idle = storage.add(make_account("b@example.com", owner="acme"))
        theirs = storage.add(make_account("c@example.com", owner="globex", tags={"t"}))
        nobody = storage.add(make_account("d@example.com"))
        for account in (mine, theirs, nobody):
            assert claim_and_complete(storage, [NOW], account_id=account.id)
        assert storage.reset_daily_counts(owner="acme") == 1
        assert storage.get(mine.id).sent_count == 0
        assert storage.get(idle.id).sent_count == 0
        assert storage.get(theirs.id).sent_count == 1
        assert storage.get(nobody.id).sent_count == 1
        assert storage.reset_daily_counts(owner="initech") == 0
        # The least used in the tag is now the account that was reset.
        later = NOW + timedelta(seconds=1)
        least = claim(Scope(tag="t"), later, strategy=Strategy.LEAST_USED)
        lease = storage.claim(least)
        assert lease is not None and lease.account_id == mine.id

    # -- record_failure() (optional: RecordsFailures) ----------------------------

    @pytest.fixture
    def health(self, storage: Storage) -> RecordsFailures:
        """The storage, when it keeps health; the test is skipped otherwise."""
        if not isinstance(storage, RecordsFailures):
            pytest.skip("the storage does not implement record_failure")
        return storage

    def test_a_quota_failure_holds_the_account_until_its_reset(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        account = storage.add(make_account(timezone="Europe/Paris"))
        held = health.record_failure(
            account.id, Failure(FailureKind.QUOTA, "550 5.4.5 quota", NOW)
        )
        midnight = datetime(2024, 5, 17, 22, 0, tzinfo=timezone.utc)  # Paris
        assert held is not None
        assert (held.pause_kind, held.paused_until) == (PauseKind.QUOTA, midnight)
        assert (held.last_error, held.last_error_at) == ("550 5.4.5 quota", NOW)
        assert storage.get(account.id) == held
        assert storage.claim(claim(now=midnight - timedelta(seconds=1))) is None
        assert storage.candidates(claim(now=NOW)) == []
        assert claim_and_complete(storage, [midnight]) == [account.id]

    def test_a_throttled_account_cools_down(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        account = storage.add(make_account())
        other = storage.add(make_account("bob@example.com"))
        health.record_failure(
            account.id,
            Failure(FailureKind.THROTTLED, "421 4.7.0 slow down", NOW, cool_down=60),
        )
        assert claim_and_complete(storage, seconds(0, 30, 59)) == [other.id] * 3
        assert (
            storage.claim(claim(now=NOW + timedelta(seconds=59), exclude={other.id}))
            is None
        )
        lease = storage.claim(
            claim(now=NOW + timedelta(seconds=60), account_id=account.id)
        )
        assert lease is not None

    def test_a_shorter_pause_never_shortens_a_longer_one(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        account = storage.add(make_account())
        health.record_failure(account.id, Failure(FailureKind.QUOTA, "550 5.4.5", NOW))
        held = health.record_failure(
            account.id, Failure(FailureKind.THROTTLED, "421 4.7.0", NOW, cool_down=60)
        )
        assert held is not None and held.pause_kind is PauseKind.QUOTA
        assert held.paused_until == datetime(2024, 5, 18, tzinfo=timezone.utc)
        assert held.last_error == "421 4.7.0"

    def test_a_broken_account_gets_status_error_at_once(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        account = storage.add(make_account())
        failed = health.record_failure(
            account.id, Failure(FailureKind.BROKEN, "535 5.7.8 refused", NOW)
        )
        assert failed is not None and failed.status is AccountStatus.ERROR
        assert failed.status_reason == "535 5.7.8 refused"
        assert storage.get(account.id) == failed
        assert storage.claim(claim()) is None

    def test_failures_in_a_row_set_error_and_a_delivery_ends_the_run(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        account = storage.add(make_account())
        transient = Failure(FailureKind.TRANSIENT, "451 4.3.0", NOW, max_failures=3)
        for _ in range(2):
            health.record_failure(account.id, transient)
        assert storage.get(account.id).consecutive_failures == 2
        assert claim_and_complete(storage, [NOW]) == [account.id]
        assert storage.get(account.id).consecutive_failures == 0
        for _ in range(3):
            failed = health.record_failure(account.id, transient)
        assert failed is not None and failed.status is AccountStatus.ERROR
        assert failed.status_reason == "3 failures in a row; the last: 451 4.3.0"
        assert storage.get(account.id) == failed

    def test_update_keeps_the_stored_health(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        account = storage.add(make_account())
        failed = health.record_failure(
            account.id, Failure(FailureKind.THROTTLED, "421 4.7.0", NOW, cool_down=60)
        )
        assert failed is not None
        updated = storage.update(
            account.replace(sender_name="Alice", consecutive_failures=4)
        )
        assert updated.sender_name == "Alice"
        assert updated.model_dump(include=set(HEALTH_FIELDS)) == failed.model_dump(
            include=set(HEALTH_FIELDS)
        )

    def test_record_failure_of_a_removed_account_returns_none(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        account = storage.add(make_account())
        storage.remove(account.id)
        failure = Failure(FailureKind.QUOTA, "550 5.4.5", NOW)
        assert health.record_failure(account.id, failure) is None
        assert storage.accounts() == []

    def test_health_is_shared_by_storage_objects(
        self, storage: Storage, health: RecordsFailures, second: Storage
    ) -> None:
        account = storage.add(make_account())
        health.record_failure(
            account.id, Failure(FailureKind.THROTTLED, "421 4.7.0", NOW, cool_down=60)
        )
        assert second.get(account.id).pause_kind is PauseKind.THROTTLED
        assert second.claim(claim(now=NOW + timedelta(seconds=30))) is None

    def test_threads_recording_failures_lose_none(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        account = storage.add(make_account())
        failure = Failure(FailureKind.TRANSIENT, "451 4.3.0", NOW, max_failures=0)
        start = threading.Barrier(8, timeout=THREAD_START_TIMEOUT)

        def record() -> None:
            start.wait()
            for _ in range(5):
                health.record_failure(account.id, failure)

        workers = [threading.Thread(target=record) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert storage.get(account.id).consecutive_failures == 40

    def test_probe_outcomes_apply_only_to_an_error_mailpool_set(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        broken = storage.add(make_account())
        by_hand = storage.add(make_account("ops@example.com"))
        later = NOW + timedelta(minutes=5)
        for account in (broken, by_hand):
            health.record_failure(
                account.id, Failure(FailureKind.BROKEN, "535 5.7.8 refused", NOW)
            )
        storage.update(
            storage.get(by_hand.id).replace(status_reason="retired by an operator")
        )
        failed = health.record_failure(
            broken.id, Failure(FailureKind.PROBE_FAILED, "probe failed: 535", later)
        )
        assert failed is not None and failed.revivable
        assert (failed.last_error, failed.last_error_at) == ("probe failed: 535", later)
        assert (failed.status_reason, failed.consecutive_failures) == (
            "probe failed: 535",
            1,
        )
        revived = health.record_failure(
            broken.id, Failure(FailureKind.REVIVED, "", later)
        )
        assert revived is not None and revived.status is AccountStatus.ACTIVE
        assert (revived.status_reason, revived.consecutive_failures) == (None, 0)
        assert storage.get(broken.id) == revived
        # Neither outcome touches an account set to error by hand, nor an
        # active one.
        hand = storage.get(by_hand.id)
        for account in (hand, revived):
            for kind in (FailureKind.REVIVED, FailureKind.PROBE_FAILED):
                assert health.record_failure(account.id, Failure(kind, "x", later)) == (
                    account
                )
        assert storage.get(by_hand.id).status is AccountStatus.ERROR

    def test_a_failure_of_a_send_in_flight_keeps_the_error_revivable(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        account = storage.add(make_account(max_in_flight=2))
        health.record_failure(
            account.id, Failure(FailureKind.BROKEN, "535 5.7.8 refused", NOW)
        )
        later = health.record_failure(
            account.id, Failure(FailureKind.TRANSIENT, "timed out", NOW)
        )
        assert later is not None and later.status is AccountStatus.ERROR
        assert later.revivable and later.last_error == "timed out"
        assert storage.get(account.id) == later

    def test_a_reason_no_storage_could_hold_is_stored_cleaned(
        self, storage: Storage, health: RecordsFailures
    ) -> None:
        account = storage.add(make_account())
        reason = "535 5.7.8 \x00bad\udcff\r\nline two\x1b"
        failed = health.record_failure(
            account.id, Failure(FailureKind.BROKEN, reason, NOW)
        )
        assert failed is not None
        assert (
            failed.last_error == failed.status_reason == "535 5.7.8  bad? \nline two "
        )
        assert storage.get(account.id) == failed
