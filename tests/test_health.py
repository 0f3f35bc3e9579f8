"""Account health: failures in a row, stored state, reactivation, deep tests."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from mailpool import (
    Account,
    AccountPool,
    AccountStatus,
    ConfigurationError,
    HealthPolicy,
    InMemoryStorage,
    JSONStorage,
    SMTPSettings,
    StorageError,
    TemporarySendError,
)
from mailpool.models import Failure, FailureKind
from mailpool.storage import RecordsFailures
from mailpool.testing import ManualClock
from pooltools import (
    ALICE,
    BOB,
    CAROL,
    AccountFactory,
    PoolFactory,
    ProtocolOnly,
    first,
    send,
)
from smtpserver import SMTPTestServer
from test_cli_support import ok

START = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


def fail_a_send(pool: AccountPool, smtp_server: SMTPTestServer) -> None:
    """One send that fails with a transient reply, retries included."""
    smtp_server.fail_next("MAIL", "451 4.3.0 Temporary lookup failure", times=3)
    with pytest.raises(TemporarySendError):
        send(pool)


def test_failures_in_a_row_set_status_error_with_reason_and_time(
    add: AccountFactory,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
) -> None:
    add(ALICE)
    pool = make_pool(failover=0, health=HealthPolicy(max_failures=2))
    fail_a_send(pool, smtp_server)
    alice = storage.get_by_email(ALICE)
    assert alice.status is AccountStatus.ACTIVE
    assert alice.consecutive_failures == 1
    assert alice.last_error is not None and "451 4.3.0" in alice.last_error
    smtp_server.drop_next("CONNECT", times=3)  # connect failures count too
    with pytest.raises(TemporarySendError):
        send(pool)
    alice = storage.get_by_email(ALICE)
    assert alice.status is AccountStatus.ERROR
    assert alice.status_reason is not None
    assert alice.status_reason.startswith("2 failures in a row")
    assert alice.last_error_at == START
    row = pool.usage()[0]
    assert row.account.last_error == alice.last_error


def test_a_delivery_ends_the_run_of_failures(
    add: AccountFactory,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
) -> None:
    add(ALICE)
    pool = make_pool(failover=0, health=HealthPolicy(max_failures=2))
    fail_a_send(pool, smtp_server)
    send(pool)
    alice = storage.get_by_email(ALICE)
    assert alice.consecutive_failures == 0
    assert alice.last_error is not None  # kept for the operator


def test_max_failures_zero_never_sets_error(
    add: AccountFactory,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
) -> None:
    add(ALICE)
    pool = make_pool(failover=0, health=HealthPolicy(max_failures=0))
    for _ in range(3):
        fail_a_send(pool, smtp_server)
    assert storage.get_by_email(ALICE).status is AccountStatus.ACTIVE


def test_account_broken_leaves_rotation_at_once_and_comes_back_when_reactivated(
    add: AccountFactory,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
) -> None:
    add(ALICE)
    add(BOB)
    pool = make_pool(selector=first)
    smtp_server.fail_next("RCPT", "554 5.7.1 <d@x.net>: Client host rejected")
    assert send(pool).account_email == BOB
    alice = storage.get_by_email(ALICE)
    assert alice.status is AccountStatus.ERROR
    assert send(pool).account_email == BOB
    storage.update(alice.replace(status=AccountStatus.ACTIVE, status_reason=None))
    assert send(pool).account_email == ALICE


def test_a_storage_without_record_failure_still_fails_over(
    make_pool: PoolFactory, smtp_server: SMTPTestServer
) -> None:
    # A custom storage with the bare protocol: nothing of the health is
    # stored, but every reply still fails over, and a broken account still
    # gets status error (through update()).
    memory = InMemoryStorage()
    storage = ProtocolOnly(lambda: memory)
    assert not isinstance(storage, RecordsFailures)
    settings = SMTPSettings(host=smtp_server.host, port=smtp_server.port, use_tls=False)
    for email in (ALICE, BOB):
        storage.add(Account(email=email, smtp=settings, min_wait_time=0))
    pool = make_pool(storage=storage, selector=first, failover=1)
    smtp_server.fail_next("MAIL", "421 4.7.0 Try again later, closing connection")
    assert send(pool).account_email == BOB
    alice = storage.get_by_email(ALICE)
    assert (alice.paused_until, alice.last_error) == (None, None)
    assert send(pool).account_email == ALICE  # no cool-down was stored
    smtp_server.fail_next("RCPT", "554 5.7.1 <d@x.net>: Client host rejected")
    assert send(pool).account_email == BOB
    alice = storage.get_by_email(ALICE)
    assert alice.status is AccountStatus.ERROR
    assert alice.status_reason is not None and "5.7.1" in alice.status_reason


@pytest.mark.parametrize(
    "options",
    [
        {"max_failures": -1},
        {"cool_down": float("nan")},
        {"revive_after": 0},
        {"revive_after": float("inf")},
        {"revive_after": True},
        {"revive_max": 31 * 24 * 3600},
        {"revive_after": 600, "revive_max": 300},
    ],
)
def test_health_policy_is_validated(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        HealthPolicy(**options)
    assert next(iter(options)) in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "no such kind"},
        {"at": "2026-01-01"},
        {"at": datetime.max.replace(tzinfo=timezone.utc)},
        {"cool_down": float("nan")},
        {"cool_down": -1},
        {"cool_down": 8 * 24 * 3600},
        {"max_failures": -1},
        {"max_failures": 1.5},
    ],
    ids=repr,
)
def test_an_impossible_failure_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Failure(**{"kind": FailureKind.QUOTA, "reason": "r", "at": START, **fields})
    assert next(iter(fields)) in str(caught.value)


def test_a_failure_kind_given_as_its_name_counts(storage: InMemoryStorage) -> None:
    account = storage.add(Account(email=ALICE, smtp=SMTPSettings(host="h")))
    failure = Failure("broken", "535 5.7.8 refused", START)  # type: ignore[arg-type]
    assert failure.kind is FailureKind.BROKEN
    failed = storage.record_failure(account.id, failure)
    assert failed is not None and failed.status is AccountStatus.ERROR


# -- revive(): the opt-in way back ---------------------------------------------------

BROKEN = "554 5.7.1 <dave@example.net>: Client host rejected: Access denied"


@pytest.fixture
def broken_alice(
    add: AccountFactory,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
) -> Account:
    """ALICE in status error after a client refusal at START (BOB delivered)."""
    add(ALICE)
    add(BOB)
    smtp_server.fail_next("RCPT", BROKEN)
    assert send(make_pool(selector=first)).account_email == BOB
    alice = storage.get_by_email(ALICE)
    assert (alice.status, alice.last_error_at) == (AccountStatus.ERROR, START)
    return alice


def test_revive_reactivates_an_account_once_its_probe_is_due_and_passes(
    broken_alice: Account,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    clock: ManualClock,
    smtp_server: SMTPTestServer,
) -> None:
    pool = make_pool(selector=first, health=HealthPolicy(revive_after=60))
    clock.advance(59)
    before = len(smtp_server.commands)
    assert pool.revive() == []  # not due yet: nothing probed
    assert smtp_server.commands[before:] == []
    clock.advance(1)
    [result] = pool.revive()
    assert (result.account_email, result.success) == (ALICE, True)
    assert "RCPT TO" in result.message  # deep by default
    alice = storage.get_by_email(ALICE)
    assert (alice.status, alice.status_reason) == (AccountStatus.ACTIVE, None)
    assert send(pool).account_email == ALICE
    assert pool.revive() == []


def test_a_failed_probe_doubles_the_wait_before_the_next(
    broken_alice: Account,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    clock: ManualClock,
    smtp_server: SMTPTestServer,
) -> None:
    pool = make_pool(health=HealthPolicy(revive_after=60, revive_max=200))
    smtp_server.reject_recipient(ALICE, "553 5.7.1 Sender address rejected: not owned")
    probed = []
    for _ in range(20):  # 60 s after the error, then 120 s, then 200 s (the most)
        clock.advance(10)
        if pool.revive():
            probed.append(clock() - START)
    assert [gap.total_seconds() for gap in probed] == [60, 180]
    alice = storage.get_by_email(ALICE)
    assert alice.status is AccountStatus.ERROR
    assert alice.status_reason == alice.last_error  # still revivable
    assert alice.consecutive_failures == 2
    assert alice.last_error is not None
    assert alice.last_error.startswith("probe failed: ") and "553" in alice.last_error
    assert HealthPolicy(revive_after=60, revive_max=200).next_probe(alice) == (
        START + timedelta(seconds=380)
    )
    # A login alone passes: the deep probe is what keeps it out.
    clock.advance(200)
    [shallow] = pool.revive(deep=False)
    assert shallow.success
    assert storage.get_by_email(ALICE).status is AccountStatus.ACTIVE


@pytest.mark.parametrize("reason", ["retired by ops", None])
def test_revive_never_probes_an_account_set_to_error_by_hand(
    add: AccountFactory,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    clock: ManualClock,
    reason: str | None,
) -> None:
    add(ALICE, status=AccountStatus.ERROR, status_reason="retired by ops")
    add(BOB, status=AccountStatus.INACTIVE)
    carol = add(CAROL)  # an account with a history of failures...
    storage.record_failure(
        carol.id, Failure(FailureKind.THROTTLED, "421 4.7.0 slow down", START)
    )
    # ... that an operator then sets to error
    storage.update(
        storage.get(carol.id).replace(status=AccountStatus.ERROR, status_reason=reason)
    )
    clock.advance(days=30)
    assert make_pool().revive() == []
    assert [a.status for a in storage.accounts()] == [
        AccountStatus.ERROR,
        AccountStatus.INACTIVE,
        AccountStatus.ERROR,
    ]


def test_a_probe_that_passes_after_the_account_changed_reactivates_nothing(
    broken_alice: Account,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    clock: ManualClock,
    smtp_server: SMTPTestServer,
) -> None:
    clock.advance(300)
    pool = make_pool()
    hold = smtp_server.hold_next("MAIL")  # the probe waits there...
    with ThreadPoolExecutor(1) as run:
        probing = run.submit(pool.revive)
        hold.wait_reached()
        current = storage.get(broken_alice.id)  # ... while ops fix the login
        smtp = current.smtp.model_copy(update={"username": "new-login"})
        storage.update(current.replace(smtp=smtp))
        hold.release()
        [result] = probing.result(timeout=30)
    assert not result.success
    assert result.message.endswith("not reactivated: it changed meanwhile.")
    assert storage.get(broken_alice.id).status is AccountStatus.ERROR


# -- the deep connection test -----------------------------------------------------


def test_deep_test_issues_mail_and_rcpt_then_rset_without_data(
    add: AccountFactory, make_pool: PoolFactory, smtp_server: SMTPTestServer
) -> None:
    add(ALICE)
    result = make_pool().test_connection(
        ALICE, deep=True, probe_address="probe@example.net"
    )
    assert result.success, result.message
    assert "RCPT TO probe@example.net" in result.message
    commands = smtp_server.commands
    assert [c for c in commands if c in ("MAIL", "RCPT", "RSET", "DATA")] == [
        "MAIL",
        "RCPT",
        "RSET",
    ]
    assert smtp_server.messages == []


def test_deep_test_finds_a_sender_ownership_refusal_and_changes_nothing(
    add: AccountFactory,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
) -> None:
    add(ALICE)
    pool = make_pool()
    assert pool.test_connection(ALICE).success  # a login alone does not see it
    smtp_server.reject_recipient(
        ALICE, "553 5.7.1 <alice@example.com>: Sender address rejected: not owned"
    )
    result = pool.test_connection(ALICE, deep=True)  # probe: its own address
    assert not result.success
    assert "5.7.1" in result.message
    assert result.message.endswith(".")
    assert storage.get_by_email(ALICE).status is AccountStatus.ACTIVE
    assert "DATA" not in smtp_server.commands


def test_deep_test_of_every_account(
    add: AccountFactory, make_pool: PoolFactory
) -> None:
    add(ALICE)
    add(BOB)
    results = make_pool().test_connections(deep=True)
    assert [r.success for r in results] == [True, True]
    with pytest.raises(ConfigurationError):
        make_pool().test_connections(deep=True, probe_address="not an address")


# -- the CLI -----------------------------------------------------------------------


def test_cli_usage_shows_last_error_and_when(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    storage = JSONStorage(tmp_path / "accounts.json")
    settings = SMTPSettings(host=smtp_server.host, port=smtp_server.port, use_tls=False)
    account = storage.add(Account(email=ALICE, smtp=settings))
    storage.record_failure(
        account.id, Failure(FailureKind.TRANSIENT, "451 4.3.0 Try later", START)
    )
    rows = json.loads(ok("usage", "--json", storage=url).out)
    assert rows[0]["last_error"] == "451 4.3.0 Try later"
    assert rows[0]["last_error_at"] == START.isoformat()
    table = ok("usage", storage=url).out
    assert "ERROR AT" in table and "451 4.3.0 Try later" in table
    deep = ok("test-accounts", "--deep", "--json", storage=url).out
    assert "RCPT TO" in json.loads(deep)[0]["message"]


def test_cli_revive_probes_the_accounts_that_are_due(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    storage = JSONStorage(tmp_path / "accounts.json")
    settings = SMTPSettings(host=smtp_server.host, port=smtp_server.port, use_tls=False)
    now = datetime.now(timezone.utc)  # the command runs on the real clock
    for email, ago in ((ALICE, 600), (BOB, 60)):
        account = storage.add(Account(email=email, smtp=settings))
        storage.record_failure(
            account.id,
            Failure(FailureKind.BROKEN, BROKEN, now - timedelta(seconds=ago)),
        )
    rows = json.loads(ok("revive", "--json", storage=url).out)
    assert [(row["account_email"], row["revived"]) for row in rows] == [(ALICE, True)]
    assert storage.get_by_email(ALICE).status is AccountStatus.ACTIVE
    assert storage.get_by_email(BOB).status is AccountStatus.ERROR
    assert "no account in error is due" in ok("revive", storage=url).out
    table = ok("revive", "--after", "30", "--shallow", storage=url).out
    assert table.startswith("revived") and BOB in table
    assert storage.get_by_email(BOB).status is AccountStatus.ACTIVE


class ReadOnlyHealth(InMemoryStorage):
    """Refuses to store a revival, as a read-only replica would."""

    def record_failure(self, account_id: str, failure: Failure, /) -> Account | None:
        if failure.kind is FailureKind.REVIVED:
            raise StorageError("the database is read-only")
        return super().record_failure(account_id, failure)


def test_a_passed_probe_that_cannot_be_stored_is_reported_as_failed(
    make_pool: PoolFactory, clock: ManualClock, smtp_server: SMTPTestServer
) -> None:
    storage = ReadOnlyHealth()
    settings = SMTPSettings(host=smtp_server.host, port=smtp_server.port, use_tls=False)
    account = storage.add(Account(email=ALICE, smtp=settings))
    storage.record_failure(account.id, Failure(FailureKind.BROKEN, BROKEN, clock()))
    clock.advance(300)
    [result] = make_pool(storage=storage).revive()
    assert not result.success
    assert result.message.endswith(
        "not reactivated: The storage failed: the database is read-only."
    )
    assert storage.get(account.id).status is AccountStatus.ERROR
