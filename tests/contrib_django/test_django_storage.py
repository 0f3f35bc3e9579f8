"""DjangoStorage beyond the shared contract: claims checked against mailpool's
reference rules, rows that never undo the send path's counts, every Account
field in a column, and a campaign's assigned accounts as a pool's scope."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.test.utils import override_settings
from testcampaigns.models import Campaign

from mailpool import (
    Account,
    AccountPool,
    AccountStatus,
    Claim,
    ConnectionType,
    Lease,
    OAuth2Credentials,
    RoundRobinSelector,
    Scope,
    SMTPSettings,
    StorageError,
    Strategy,
)
from mailpool.contrib.django.models import (
    SETTINGS_FIELDS,
    USAGE_FIELDS,
    EmailAccount,
    from_db,
    to_db,
)
from mailpool.contrib.django.storage import DjangoStorage
from mailpool.models import PauseKind
from mailpool.testing import ManualClock, RecordingTransport

ALIASES = settings.STORAGE_ALIASES
NOW = datetime(2024, 5, 17, 12, 0, tzinfo=timezone.utc)
ZONES = ["UTC", "UTC", "Pacific/Kiritimati", "America/Los_Angeles", "Asia/Kolkata"]
"""Zones a day ahead of UTC, behind it, and half an hour off."""


def _alias_params() -> list[Any]:
    params = []
    for kind in ("sqlite", "postgresql"):
        alias = ALIASES.get(kind)
        marks = [
            pytest.mark.django_db(transaction=True, databases=[alias or "default"])
        ]
        if alias is None:
            marks.append(pytest.mark.skip(reason="needs MAILPOOL_TEST_POSTGRES_URL"))
        params.append(pytest.param(alias, id=kind, marks=marks))
    return params


@pytest.fixture(params=_alias_params())
def storage(request: pytest.FixtureRequest) -> Iterator[DjangoStorage]:
    storage = DjangoStorage(using=request.param)
    yield storage
    storage.close()


def account(email: str, **fields: Any) -> Account:
    fields.setdefault(
        "smtp", SMTPSettings(host="smtp.example.com", username=email, password="pw")
    )
    fields.setdefault("min_wait_time", 0.0)
    return Account(email=email, **fields)


# -- claims follow the reference rules --------------------------------------------


def test_claims_agree_with_the_reference_rules(storage: DjangoStorage) -> None:
    # Random accounts, then random claims, completions, releases, updates and
    # resets; after each step the stored accounts are what mailpool's own
    # rules (Claim.allows / pick, Account.with_claim / with_lease_ended) say.
    rng = random.Random(20240517)
    owners = [None, "acme", "globex"]
    for n in range(14):
        storage.add(
            account(
                f"a{n:02}@example.com",
                owner=rng.choice(owners),
                tags=set(rng.sample(["x", "y", "z"], rng.randint(0, 2))),
                daily_limit=rng.randint(0, 4),
                min_wait_time=rng.choice([0.0, 0.0, 5.0, 30.0]),
                max_in_flight=rng.randint(1, 2),
                timezone=rng.choice(ZONES),
                status=rng.choice([AccountStatus.ACTIVE] * 4 + [AccountStatus.ERROR]),
            )
        )
    ids = sorted(a.id for a in storage.accounts())
    now = NOW
    leases: list[Lease] = []
    granted = refused = 0
    for step in range(400):
        now += timedelta(seconds=rng.choice([0, 1, 2, 10, 60, 1800, 5 * 3600]))
        roll = rng.random()
        if roll < 0.6:
            claim = Claim(
                rng.choice(
                    [
                        Scope(),
                        Scope(owner="acme"),
                        Scope(tag="x"),
                        Scope(owner="globex", tag="y"),
                        Scope(account_ids=frozenset(rng.sample(ids, 4))),
                    ]
                ),
                now,
                lease_seconds=rng.choice([20.0, 300.0]),
                strategy=rng.choice(list(Strategy)),
                account_id=rng.choice([None, None, None, rng.choice(ids)]),
                exclude=frozenset(rng.sample(ids, rng.randint(0, 2))),
                rng=random.Random(step),
            )
            before = {a.id: a for a in storage.accounts()}
            allowed = [a for a in before.values() if claim.allows(a)]
            lease = storage.claim(claim)
            if not allowed:
                assert lease is None, step
                refused += 1
                continue
            assert lease is not None, step
            granted += 1
            chosen = before[lease.account_id]
            assert claim.allows(chosen)
            if claim.account_id is None and claim.strategy is not Strategy.RANDOM:
                expected = claim.pick(allowed)
                assert expected is not None
                assert lease.account_id == expected.id, (step, claim.strategy)
            assert lease.account == chosen.with_claim(now, claim.lease_until())
            assert storage.get(lease.account_id) == lease.account
            leases.append(lease)
        elif roll < 0.85 and leases:
            lease = leases.pop(rng.randrange(len(leases)))
            delivered = rng.random() < 0.7
            before_end = storage.get(lease.account_id)
            (storage.complete if delivered else storage.release)(lease, now)
            assert storage.get(lease.account_id) == before_end.with_lease_ended(
                lease.expires_at, now, delivered=delivered, day=lease.day
            )
        elif roll < 0.9:
            owner = rng.choice(owners)
            before_all = storage.accounts()
            expected_reset = sum(
                1 for a in before_all if a.sent_count > 0 and owner in (None, a.owner)
            )
            assert storage.reset_daily_counts(owner=owner) == expected_reset
        else:
            target = storage.get(rng.choice(ids))
            changed = target.replace(
                min_wait_time=rng.choice([0.0, 5.0, 60.0]),
                daily_limit=rng.randint(0, 4),
                status=rng.choice([AccountStatus.ACTIVE, AccountStatus.INACTIVE]),
                # A stale copy's counters must not be written.
                sent_count=0,
                in_flight=0,
            )
            stored = storage.update(changed)
            assert stored.min_wait_time == changed.min_wait_time
            for name in USAGE_FIELDS:
                assert getattr(stored, name) == getattr(target, name)
    assert granted > 50 and refused > 20  # the walk saw both outcomes


def test_a_claim_names_an_account_it_may_not_take(storage: DjangoStorage) -> None:
    full = storage.add(account("full@example.com", daily_limit=1))
    assert storage.claim(Claim(Scope(), NOW, account_id=full.id)) is not None
    assert storage.claim(Claim(Scope(), NOW, account_id=full.id)) is None
    assert storage.claim(Claim(Scope(), NOW, account_id="no-such-id")) is None


def test_a_zone_stored_by_another_process_counts_on_its_own_day(
    storage: DjangoStorage,
) -> None:
    # This storage reads the stored zones now; another one (another process)
    # then adds an account in a zone a day ahead of UTC, at its limit for its
    # own yesterday: it may send (its count is from an earlier day).
    storage.add(account("utc@example.com", daily_limit=0))
    assert storage.claim(Claim(Scope(), NOW)) is None
    other = DjangoStorage(using=storage.using)
    ahead = other.add(
        account(
            "ahead@example.com",
            timezone="Pacific/Kiritimati",  # UTC+14: already May 18th at NOW
            daily_limit=1,
            sent_count=1,
            count_day=date(2024, 5, 17),
        )
    )
    lease = storage.claim(Claim(Scope(), NOW))
    assert lease is not None
    assert lease.account_id == ahead.id
    assert (lease.day, lease.account.sent_count) == (date(2024, 5, 18), 1)


def test_the_minimum_wait_follows_a_changed_setting(storage: DjangoStorage) -> None:
    stored = storage.add(account("alice@example.com", min_wait_time=60.0))
    lease = storage.claim(Claim(Scope(), NOW))
    assert lease is not None
    storage.complete(lease, NOW)
    later = NOW + timedelta(seconds=30)
    assert storage.claim(Claim(Scope(), later)) is None
    storage.update(stored.replace(min_wait_time=10.0))
    assert storage.claim(Claim(Scope(), later)) is not None


# -- rows -------------------------------------------------------------------------


def test_every_account_field_has_a_column(storage: DjangoStorage) -> None:
    # A field added to Account (or its settings) must get a column here: this
    # round trip of every field set away from its default says so.
    full = Account(
        id="acct-1",
        email="Full.Name@Example.com",
        sender_name="Full Name",
        owner="acme",
        tags={"spring", "vip"},
        connection_type=ConnectionType.GMAIL,
        status=AccountStatus.ERROR,
        status_reason="535 refused",
        daily_limit=7,
        min_wait_time=2.5,
        max_in_flight=3,
        timezone="Europe/Paris",
        smtp=SMTPSettings(
            host="smtp.example.org",
            port=2525,
            use_tls=False,
            use_ssl=True,
            username="login",
            password="secret-pw",
            allow_insecure_auth=True,
        ),
        oauth2=OAuth2Credentials(
            access_token="access",
            refresh_token="refresh",
            token_expiry=NOW + timedelta(hours=1),
            client_id="client",
            client_secret="client-secret",
            token_url="https://oauth.example.org/token",
            scope="https://mail.example.org/",
        ),
        sent_count=4,
        count_day=date(2024, 5, 17),
        last_sent_at=NOW - timedelta(seconds=5),
        in_flight=2,
        lease_until=NOW + timedelta(seconds=90),
        paused_until=NOW + timedelta(hours=2),
        pause_kind=PauseKind.THROTTLED,
        consecutive_failures=2,
        last_error="451 slow down",
        last_error_at=NOW - timedelta(minutes=1),
    )
    defaults = Account(email="x@example.com", smtp=SMTPSettings(host="h"))
    for model, values in (
        (Account, full),
        (SMTPSettings, full.smtp),
        (OAuth2Credentials, full.oauth2),
    ):
        blank = {
            Account: defaults,
            SMTPSettings: SMTPSettings(host="h"),
            OAuth2Credentials: OAuth2Credentials(),
        }[model]
        same = [
            name
            for name in model.model_fields
            if name not in ("id", "email", "host")
            and getattr(values, name) == getattr(blank, name)
        ]
        assert not same, f"set {model.__name__}.{same} in this test"
    storage.add(full)
    assert storage.get("acct-1") == full
    row = EmailAccount.objects.using(storage.using).get(pk="acct-1")
    assert row.to_account() == full
    assert EmailAccount.from_account(full).to_account(full.tags) == full


def test_saving_a_row_read_before_sends_keeps_their_counts(
    storage: DjangoStorage,
) -> None:
    stored = storage.add(account("alice@example.com", daily_limit=5))
    stale = EmailAccount.objects.using(storage.using).get(pk=stored.id)
    for _ in range(3):
        lease = storage.claim(Claim(Scope(), NOW))
        assert lease is not None
        storage.complete(lease, NOW)
    stale.sender_name = "Renamed in the admin"
    stale.save()
    after = storage.get(stored.id)
    assert after.sender_name == "Renamed in the admin"
    assert (after.sent_count, after.last_sent_at) == (3, NOW)


def test_an_invalid_row_is_a_storage_error(storage: DjangoStorage) -> None:
    stored = storage.add(account("alice@example.com"))
    EmailAccount.objects.using(storage.using).filter(pk=stored.id).update(smtp_port=0)
    with pytest.raises(StorageError, match="invalid"):
        storage.get(stored.id)


def test_removing_an_assigned_account_unassigns_it(storage: DjangoStorage) -> None:
    kept = storage.add(account("kept@example.com"))
    gone = storage.add(account("gone@example.com"))
    campaign = Campaign.objects.using(storage.using).create(name="Spring")
    campaign.accounts.set([kept.id, gone.id])
    storage.remove(gone.id)
    assert list(campaign.accounts.values_list("pk", flat=True)) == [kept.id]


def test_times_without_time_zone_support_are_utc() -> None:
    aware = datetime(2024, 5, 17, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    with override_settings(USE_TZ=False):
        stored = to_db(aware)
        assert stored == datetime(2024, 5, 17, 12, 0)
    assert from_db(stored) == aware
    assert to_db(aware) == aware
    assert set(USAGE_FIELDS).isdisjoint(SETTINGS_FIELDS)


# -- a campaign's accounts ----------------------------------------------------------


@pytest.mark.django_db
def test_a_pool_sends_only_through_a_campaigns_accounts() -> None:
    storage = DjangoStorage()
    assigned = [storage.add(account(f"a{n}@example.com")) for n in range(3)]
    others = [storage.add(account(f"b{n}@example.com")) for n in range(3)]
    campaign = Campaign.objects.create(name="Spring")
    campaign.accounts.set([a.id for a in assigned])
    transport = RecordingTransport()
    pool = AccountPool(
        storage,
        account_ids=campaign.accounts.values_list("pk", flat=True),
        # In turn, so that 9 sends surely use all 3 (random could skip one).
        selector=RoundRobinSelector(),
        transport=transport,
        clock=ManualClock(NOW),
    )
    for n in range(9):
        pool.send_mail(subject=f"{n}", body=".", to=["reader@example.net"])
    used = {sent.account.id for sent in transport.sent}
    assert used == {a.id for a in assigned}
    assert all(storage.get(a.id).sent_count == 0 for a in others)


@pytest.mark.django_db
def test_the_database_does_the_picking_with_one_index_walk() -> None:
    storage = DjangoStorage()
    storage.add_many(account(f"a{n:03}@example.com") for n in range(300))
    connection = connections["default"]
    from django.test.utils import CaptureQueriesContext

    assert storage.claim(Claim(Scope(), NOW)) is not None  # reads the zone map
    with CaptureQueriesContext(connection) as queries:
        lease = storage.claim(Claim(Scope(), NOW))
    assert lease is not None
    # Lock, pick (one LIMIT 1 statement per walk range), read, count: a few
    # statements, none of which reads every account.
    selects = [q["sql"] for q in queries if q["sql"].startswith("SELECT")]
    assert len(selects) <= 4, selects
    assert all("WHERE" in sql for sql in selects), selects
    picks = [sql for sql in selects if "ORDER BY" in sql]
    assert picks and all("LIMIT 1" in sql for sql in picks), picks
