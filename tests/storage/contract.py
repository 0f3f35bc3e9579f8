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
...)``); the durability test is skipped without it. The tests
use fixed datetimes (never the wall clock), so they pass on any day and in any
time zone. The class has no ``Test`` prefix, so pytest collects it only through
subclasses. It only needs ``pytest`` and ``mailpool``: copy this file into your
own project to check a custom backend (see docs/custom-storage.md).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import SecretStr

from mailpool import (
    Account,
    AccountNotFound,
    AccountStatus,
    ConfigurationError,
    ConnectionType,
    OAuth2Credentials,
    Reservation,
    Scope,
    SMTPSettings,
    Storage,
    StorageError,
)

__all__ = [
    "DAY",
    "NOW",
    "Reopen",
    "StorageContract",
    "assert_exactly_the_limit_granted",
    "make_account",
    "reserve_in_threads",
]

NOW = datetime(2024, 5, 17, 12, 0, 0, tzinfo=timezone.utc)
"""The 'current' time of the tests: noon UTC on :data:`DAY`."""
DAY = NOW.date()
NEXT_DAY = NOW + timedelta(days=1)
YESTERDAY = DAY - timedelta(days=1)


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


def emails(accounts: list[Account]) -> list[str]:
    return [account.email for account in accounts]


Reopen = Callable[[], Storage]
"""Opens a new storage object on the location of the test's ``storage``."""

THREAD_START_TIMEOUT = 60.0
"""Seconds a racing thread waits for the others at the start barrier."""


def reserve_in_threads(
    storages: Sequence[Storage], account_id: str, *, threads: int, tries: int
) -> list[Reservation | None]:
    """``threads`` threads, started together, each call ``reserve(account_id,
    now)`` ``tries`` times; thread ``n`` uses ``storages[n % len(storages)]``.

    Every call gets its own fixed moment of :data:`DAY` (a millisecond apart),
    so the moments reach the storage out of order, as from the clocks of
    several workers. :returns: every answer (the reservation, or None when
    refused), in no particular order.
    :raises RuntimeError: from the first error, when a thread raised.
    """
    start = threading.Barrier(threads, timeout=THREAD_START_TIMEOUT)
    answers: list[Reservation | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        storage = storages[index % len(storages)]
        try:
            start.wait()
            mine = [
                storage.reserve(
                    account_id, NOW + timedelta(milliseconds=index * tries + attempt)
                )
                for attempt in range(tries)
            ]
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
    answers: list[Reservation | None], stored: Account, limit: int
) -> None:
    """``answers`` (from :func:`reserve_in_threads`, more attempts than
    ``limit``) granted each of the ``limit`` units of :data:`DAY` exactly
    once, and ``stored`` (the account read back afterwards) counts them all."""
    granted = [answer for answer in answers if answer is not None]
    assert len(answers) > limit, "the race needs more attempts than the limit"
    assert len(granted) == limit, (
        f"{len(granted)} of {len(answers)} attempts granted; the limit is {limit}"
    )
    assert sorted(r.account.sent_count for r in granted) == list(range(1, limit + 1))
    assert {r.day for r in granted} == {DAY}
    assert (stored.sent_count, stored.count_day) == (limit, DAY)
    # The stamp is the latest moment granted: it never moved back.
    assert stored.last_sent_at == max(r.reserved_at for r in granted)


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
        assert storage.eligible(Scope(), NOW) == []

    def test_close_twice_keeps_everything_for_a_new_storage(
        self, storage: Storage, reopen: Reopen | None
    ) -> None:
        if reopen is None:
            pytest.skip("this backend keeps nothing after close()")
        account = storage.add(make_account(tags={"x"}))
        other = storage.add(make_account("other@example.com", daily_limit=1))
        assert storage.reserve(other.id, NOW) is not None
        expected = storage.accounts()
        storage.close()
        storage.close()  # idempotent: no error the second time
        fresh = reopen()
        try:
            assert fresh.accounts() == expected
            assert fresh.get(account.id) == account
            stored = fresh.get(other.id)
            assert (stored.sent_count, stored.count_day, stored.last_sent_at) == (
                1,
                DAY,
                NOW,
            )
            # The reopened storage enforces the stored count.
            assert fresh.reserve(other.id, NOW + timedelta(seconds=1)) is None
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
            sent_count=7, count_day=DAY, last_sent_at=NOW - timedelta(minutes=5)
        )
        storage.add(account)
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.count_day, stored.last_sent_at) == (
            7,
            DAY,
            NOW - timedelta(minutes=5),
        )

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
            ),
            sent_count=4,
            count_day=DAY,
            last_sent_at=datetime(2024, 5, 17, 11, 59, 58, 123456, timezone.utc),
        )
        storage.add(account)
        stored = storage.get(account.id)
        assert stored == account
        assert stored.tags == frozenset({"spring-campaign", "vip", "eu"})
        assert stored.oauth2 is not None and account.oauth2 is not None
        assert stored.oauth2.token_expiry == account.oauth2.token_expiry
        assert stored.last_sent_at == account.last_sent_at
        assert stored.last_sent_at is not None
        assert stored.last_sent_at.utcoffset() == timedelta(0)
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
        account = storage.add(make_account(daily_limit=10))
        reservation = storage.reserve(account.id, NOW)
        assert reservation is not None
        # An update built from a stale copy (count 0, never sent) or a copy that
        # tries to set the counters must not change them.
        stale = account.replace(sender_name="Renamed")
        forged = account.replace(
            sender_name="Forged", sent_count=0, count_day=None, last_sent_at=None
        )
        for attempt in (stale, forged):
            returned = storage.update(attempt)
            stored = storage.get(account.id)
            assert stored.sender_name == attempt.sender_name
            assert (stored.sent_count, stored.count_day, stored.last_sent_at) == (
                1,
                DAY,
                NOW,
            )
            assert returned == stored

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

    # -- eligible() ------------------------------------------------------------

    def test_eligible_filters_by_scope(self, storage: Storage) -> None:
        a = storage.add(make_account("a@example.com", owner="acme", tags={"x"}))
        b = storage.add(make_account("b@example.com", owner="acme", tags={"y"}))
        c = storage.add(make_account("c@example.com", owner="globex", tags={"x"}))
        assert emails(storage.eligible(Scope(), NOW)) == [a.email, b.email, c.email]
        assert emails(storage.eligible(Scope(owner="acme"), NOW)) == [a.email, b.email]
        assert emails(storage.eligible(Scope(tag="x"), NOW)) == [a.email, c.email]
        assert emails(storage.eligible(Scope(owner="acme", tag="x"), NOW)) == [a.email]
        ids = Scope(account_ids=frozenset({b.id, c.id, "unknown-id"}))
        assert emails(storage.eligible(ids, NOW)) == [b.email, c.email]
        assert storage.eligible(Scope(account_ids=frozenset()), NOW) == []
        assert storage.eligible(Scope(owner="initech"), NOW) == []

    def test_eligible_is_ordered_by_email(self, storage: Storage) -> None:
        for address in ["d@example.com", "B@example.com", "a@example.com"]:
            storage.add(make_account(address))
        assert emails(storage.eligible(Scope(), NOW)) == [
            "a@example.com",
            "B@example.com",
            "d@example.com",
        ]

    def test_eligible_excludes_accounts_that_are_not_active(
        self, storage: Storage
    ) -> None:
        storage.add(make_account("active@example.com"))
        for status in (
            AccountStatus.INACTIVE,
            AccountStatus.ERROR,
            AccountStatus.PENDING,
        ):
            storage.add(make_account(f"{status.value}@example.com", status=status))
        assert emails(storage.eligible(Scope(), NOW)) == ["active@example.com"]

    def test_eligible_excludes_accounts_at_their_daily_limit(
        self, storage: Storage
    ) -> None:
        storage.add(
            make_account("full@example.com", daily_limit=3, sent_count=3, count_day=DAY)
        )
        storage.add(make_account("zero@example.com", daily_limit=0))
        storage.add(
            make_account("room@example.com", daily_limit=3, sent_count=2, count_day=DAY)
        )
        assert emails(storage.eligible(Scope(), NOW)) == ["room@example.com"]

    def test_eligible_excludes_accounts_inside_their_min_wait(
        self, storage: Storage
    ) -> None:
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
        assert emails(storage.eligible(Scope(), NOW)) == ["rested@example.com"]
        later = NOW + timedelta(seconds=30)
        assert emails(storage.eligible(Scope(), later)) == [
            "rested@example.com",
            "waiting@example.com",
        ]

    def test_eligible_returns_counts_rolled_over_to_the_day(
        self, storage: Storage
    ) -> None:
        old = storage.add(
            make_account(
                "old@example.com", daily_limit=5, sent_count=5, count_day=YESTERDAY
            )
        )
        today = storage.add(
            make_account("today@example.com", sent_count=2, count_day=DAY)
        )
        found = {account.id: account for account in storage.eligible(Scope(), NOW)}
        assert (found[old.id].sent_count, found[old.id].count_day) == (0, DAY)
        assert (found[today.id].sent_count, found[today.id].count_day) == (2, DAY)

    # -- reserve() -------------------------------------------------------------

    def test_reserve_counts_one_send_and_stamps_last_sent_at(
        self, storage: Storage
    ) -> None:
        previous = NOW - timedelta(hours=1)
        account = storage.add(
            make_account(sent_count=2, count_day=DAY, last_sent_at=previous)
        )
        reservation = storage.reserve(account.id, NOW)
        assert isinstance(reservation, Reservation)
        assert reservation.account_id == account.id
        assert reservation.day == DAY
        assert reservation.reserved_at == NOW
        assert reservation.previous_last_sent_at == previous
        assert reservation.account.sent_count == 3
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.count_day, stored.last_sent_at) == (
            3,
            DAY,
            NOW,
        )
        assert reservation.account == stored

    def test_reserve_refuses_at_the_daily_limit(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=2))
        moments = [NOW + timedelta(seconds=i) for i in range(3)]
        results = [storage.reserve(account.id, moment) for moment in moments]
        assert [r is not None for r in results] == [True, True, False]
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.last_sent_at) == (2, moments[1])
        assert storage.eligible(Scope(), moments[2]) == []

    def test_reserve_refuses_a_zero_daily_limit(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=0))
        assert storage.reserve(account.id, NOW) is None
        assert storage.get(account.id).sent_count == 0

    def test_reserve_refuses_within_the_min_wait(self, storage: Storage) -> None:
        account = storage.add(make_account(min_wait_time=60))
        assert storage.reserve(account.id, NOW) is not None
        assert storage.reserve(account.id, NOW + timedelta(seconds=30)) is None
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.last_sent_at) == (1, NOW)
        assert storage.reserve(account.id, NOW + timedelta(seconds=60)) is not None
        assert storage.get(account.id).sent_count == 2

    def test_zero_min_wait_ignores_a_stamp_from_a_clock_running_ahead(
        self, storage: Storage
    ) -> None:
        ahead = NOW + timedelta(seconds=5)  # another worker's clock runs ahead
        account = storage.add(make_account(min_wait_time=0, last_sent_at=ahead))
        assert [a.id for a in storage.eligible(Scope(), NOW)] == [account.id]
        assert storage.reserve(account.id, NOW) is not None
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.last_sent_at) == (1, ahead)  # never back

    def test_reserve_refuses_an_account_that_is_not_active(
        self, storage: Storage
    ) -> None:
        account = storage.add(make_account(status=AccountStatus.INACTIVE))
        assert storage.reserve(account.id, NOW) is None
        assert storage.get(account.id) == account

    def test_reserve_missing_raises_account_not_found(self, storage: Storage) -> None:
        with pytest.raises(AccountNotFound):
            storage.reserve("nope", NOW)

    def test_count_from_yesterday_reads_zero_and_reserve_works_the_next_day(
        self, storage: Storage
    ) -> None:
        account = storage.add(make_account(daily_limit=1))
        assert storage.reserve(account.id, NOW) is not None
        assert storage.reserve(account.id, NOW + timedelta(hours=1)) is None
        assert storage.eligible(Scope(), NEXT_DAY)[0].sent_count == 0
        reservation = storage.reserve(account.id, NEXT_DAY)
        assert reservation is not None
        assert reservation.day == NEXT_DAY.date()
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.count_day, stored.last_sent_at) == (
            1,
            NEXT_DAY.date(),
            NEXT_DAY,
        )

    def test_threads_never_reserve_past_the_daily_limit(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=50, min_wait_time=0))
        answers = reserve_in_threads([storage], account.id, threads=16, tries=5)
        assert_exactly_the_limit_granted(answers, storage.get(account.id), 50)
        assert storage.eligible(Scope(), NOW + timedelta(hours=1)) == []
        assert storage.reserve(account.id, NOW + timedelta(hours=1)) is None

    # -- release() -------------------------------------------------------------

    def test_release_gives_the_unit_back_and_restores_last_sent_at(
        self, storage: Storage
    ) -> None:
        previous = NOW - timedelta(hours=2)
        account = storage.add(
            make_account(
                daily_limit=1, min_wait_time=3600, sent_count=0, last_sent_at=previous
            )
        )
        reservation = storage.reserve(account.id, NOW)
        assert reservation is not None
        storage.release(reservation)
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.last_sent_at) == (0, previous)
        # The unit and the wait are really given back.
        assert storage.reserve(account.id, NOW + timedelta(seconds=1)) is not None

    def test_release_keeps_a_later_send_stamp(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=5))
        first = storage.reserve(account.id, NOW)
        second = storage.reserve(account.id, NOW + timedelta(seconds=5))
        assert first is not None and second is not None
        storage.release(first)
        stored = storage.get(account.id)
        assert (stored.sent_count, stored.last_sent_at) == (
            1,
            NOW + timedelta(seconds=5),
        )

    def test_release_after_a_rollover_changes_nothing(self, storage: Storage) -> None:
        account = storage.add(make_account(daily_limit=5))
        yesterdays = storage.reserve(account.id, NOW)
        todays = storage.reserve(account.id, NEXT_DAY)
        assert yesterdays is not None and todays is not None
        before = storage.get(account.id)
        storage.release(yesterdays)
        assert storage.get(account.id) == before
        assert (before.sent_count, before.count_day) == (1, NEXT_DAY.date())

    def test_release_of_a_removed_account_does_nothing(self, storage: Storage) -> None:
        account = storage.add(make_account())
        other = storage.add(make_account("other@example.com"))
        reservation = storage.reserve(account.id, NOW)
        assert reservation is not None
        storage.remove(account.id)
        storage.release(reservation)
        assert storage.accounts() == [other]

    # -- reset_daily_counts() --------------------------------------------------

    def test_reset_daily_counts_resets_every_account(self, storage: Storage) -> None:
        a = storage.add(make_account("a@example.com", daily_limit=1))
        b = storage.add(make_account("b@example.com", owner="acme"))
        idle = storage.add(make_account("idle@example.com"))
        assert storage.reserve(a.id, NOW) is not None
        assert storage.reserve(b.id, NOW) is not None
        assert storage.reset_daily_counts() == 2
        for account in (a, b, idle):
            assert storage.get(account.id).sent_count == 0
        # The limit is available again.
        assert storage.reserve(a.id, NOW + timedelta(seconds=1)) is not None
        assert storage.reset_daily_counts() == 1
        assert storage.reset_daily_counts() == 0

    def test_reset_daily_counts_by_owner(self, storage: Storage) -> None:
        mine = storage.add(make_account("a@example.com", owner="acme"))
        idle = storage.add(make_account("b@example.com", owner="acme"))
        theirs = storage.add(make_account("c@example.com", owner="globex"))
        nobody = storage.add(make_account("d@example.com"))
        for account in (mine, theirs, nobody):
            assert storage.reserve(account.id, NOW) is not None
        assert storage.reset_daily_counts(owner="acme") == 1
        assert storage.get(mine.id).sent_count == 0
        assert storage.get(idle.id).sent_count == 0
        assert storage.get(theirs.id).sent_count == 1
        assert storage.get(nobody.id).sent_count == 1
        assert storage.reset_daily_counts(owner="initech") == 0
