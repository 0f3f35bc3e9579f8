"""Account health: failures in a row, stored state, reactivation, deep tests."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailpool import (
    Account,
    AccountStatus,
    ConfigurationError,
    HealthPolicy,
    InMemoryStorage,
    JSONStorage,
    SMTPSettings,
    TemporarySendError,
)
from mailpool.models import Failure, FailureKind
from mailpool.storage import RecordsFailures
from pooltools import (
    ALICE,
    BOB,
    AccountFactory,
    PoolFactory,
    ProtocolOnly,
    first,
    send,
)
from smtpserver import SMTPTestServer
from test_cli_support import ok

START = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


def test_failures_in_a_row_set_status_error_with_reason_and_time(
    add: AccountFactory,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
) -> None:
    add(ALICE)
    pool = make_pool(failover=0, health=HealthPolicy(max_failures=2))
    smtp_server.fail_next("MAIL", "451 4.3.0 Temporary lookup failure", times=3)
    with pytest.raises(TemporarySendError):
        send(pool)
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
    smtp_server.fail_next("MAIL", "451 4.3.0 Temporary lookup failure", times=3)
    with pytest.raises(TemporarySendError):
        send(pool)
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
        smtp_server.fail_next("MAIL", "451 4.3.0 Try later", times=3)
        with pytest.raises(TemporarySendError):
            send(pool)
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


def test_health_policy_is_validated() -> None:
    with pytest.raises(ConfigurationError):
        HealthPolicy(max_failures=-1)
    with pytest.raises(ConfigurationError):
        HealthPolicy(cool_down=float("nan"))


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
