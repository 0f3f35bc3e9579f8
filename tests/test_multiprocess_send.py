"""End-to-end proof: pools in real processes never send past a daily limit.

4 spawned processes x 4 threads, each process with one AccountPool on a shared
storage (a JSON file, a SQLite file, and PostgreSQL when
``MAILPOOL_TEST_POSTGRES_URL`` is set; each test on an empty storage), send
real mail through one real SMTP server (``smtp_server``) until the pool says
that every account reached its limit. The workers are in send_workers.py.

Pass or fail never depends on timing: the assertions count what the server
received, what the pools returned and what the storage holds.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import workers

import send_workers
from mailpool import (
    Account,
    AccountPool,
    NoAccountAvailable,
    NoAccountReason,
    RetryPolicy,
    SMTPSettings,
    Storage,
    open_storage,
)
from send_workers import Failed, Outcome, Sent, Unavailable
from smtpserver import SMTPTestServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROCESSES = 4
THREADS = 4
ACCOUNTS = 4
DAILY_LIMIT = 15
TOTAL = ACCOUNTS * DAILY_LIMIT
LEASE_TIMEOUT = 60.0


# An empty storage of each kind (a fresh schema for PostgreSQL).
storage_url = workers.storage_url_fixture()


@pytest.fixture
def shared(storage_url: str, smtp_server: SMTPTestServer) -> Iterator[Storage]:
    """The storage as the parent sees it, holding the senders: relay accounts
    on ``smtp_server`` with a daily limit of 15 and no minimum wait."""
    storage = open_storage(storage_url)
    smtp = SMTPSettings(host=smtp_server.host, port=smtp_server.port, use_tls=False)
    try:
        for n in range(ACCOUNTS):
            storage.add(
                Account(
                    email=f"sender{n}@example.com",
                    sender_name=f"Sender {n}",
                    smtp=smtp,
                    daily_limit=DAILY_LIMIT,
                    min_wait_time=0,
                )
            )
        yield storage
    finally:
        storage.close()


def send_from_processes(url: str, retry: RetryPolicy | None) -> list[list[Outcome]]:
    """Run the senders; return each thread's outcomes (of every process)."""
    batches = workers.run_children(
        send_workers.send_until_limit,
        (url, retry),
        processes=PROCESSES,
        threads=THREADS,
    )
    threads = [thread for process in batches for thread in process]
    assert len(threads) == PROCESSES * THREADS
    return threads


def assert_exactly_the_limits_were_sent(
    server: SMTPTestServer, storage: Storage, threads: list[list[Outcome]]
) -> list[Sent]:
    """The checks both proofs share; returns the successful sends."""
    outcomes = [outcome for thread in threads for outcome in thread]
    sent = [outcome for outcome in outcomes if isinstance(outcome, Sent)]
    senders = {account.email: account.id for account in storage.accounts()}
    limits = dict.fromkeys(senders, DAILY_LIMIT)

    # The server got exactly the daily limits, every message once.
    received = list(server.messages)
    assert len(received) == TOTAL
    assert Counter(message.mail_from for message in received) == limits
    assert all(m.rcpt_tos == (send_workers.RECIPIENT,) for m in received)
    received_ids = [str(message.message["Message-ID"]) for message in received]
    assert len(set(received_ids)) == TOTAL

    # The pools reported exactly those messages, through those accounts.
    assert len(sent) == TOTAL
    assert sorted(s.result.message_id for s in sent) == sorted(received_ids)
    assert Counter(s.result.account_email for s in sent) == limits
    assert all(senders[s.result.account_email] == s.result.account_id for s in sent)

    # Every thread went on until the pool said all accounts are at the limit.
    for thread in threads:
        last = thread[-1]
        assert isinstance(last, Unavailable), thread
        assert last.reason is NoAccountReason.ALL_AT_LIMIT, thread

    # The storage counted exactly what was delivered (failed sends given back).
    day = sent[0].result.sent_at.date()
    if all(s.result.sent_at.date() == day for s in sent):  # not across midnight
        assert {a.email: a.sent_on(day) for a in storage.accounts()} == limits
    return sent


def test_processes_sending_through_pools_deliver_exactly_the_daily_limits(
    storage_url: str, shared: Storage, smtp_server: SMTPTestServer
) -> None:
    threads = send_from_processes(storage_url, retry=None)

    assert_exactly_the_limits_were_sent(smtp_server, shared, threads)
    # With no failures and no minimum wait, no send was ever refused or failed:
    # each thread's only refusal is its last one.
    mistakes = [o for thread in threads for o in thread[:-1] if not isinstance(o, Sent)]
    assert not mistakes, f"{len(mistakes)} sends refused or failed: {mistakes}"


def test_failed_sends_fail_over_and_are_never_counted(
    storage_url: str, shared: Storage, smtp_server: SMTPTestServer
) -> None:
    faults = 10
    smtp_server.fail_next("DATA", "451 4.3.0 try later", times=faults)

    threads = send_from_processes(storage_url, retry=RetryPolicy(attempts=1))

    sent = assert_exactly_the_limits_were_sent(smtp_server, shared, threads)
    # The first DATA commands failed: each failed try shows as an extra
    # attempt of a send that failed over, or as a send that failed on every
    # account it tried (at least one try each).
    failed = [o for thread in threads for o in thread if isinstance(o, Failed)]
    assert all(f.smtp_code == 451 for f in failed), failed
    tries_seen_failing = sum(s.result.attempts - 1 for s in sent) + len(failed)
    assert 0 < tries_seen_failing <= faults


def test_a_claim_of_a_worker_killed_mid_send_expires_and_stays_counted(
    storage_url: str, smtp_server: SMTPTestServer
) -> None:
    storage = open_storage(storage_url)
    smtp = SMTPSettings(host=smtp_server.host, port=smtp_server.port, use_tls=False)
    account = storage.add(Account(email=send_workers.RECIPIENT, smtp=smtp))
    hold = smtp_server.hold_next("DATA")
    child = workers.SPAWN.Process(
        target=send_workers.send_one, args=(storage_url, LEASE_TIMEOUT)
    )
    child.start()
    try:
        hold.wait_reached()
        os.kill(child.pid or 0, signal.SIGKILL)  # mid-send: the lease is never ended
    finally:
        child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    killed_on = datetime.now(timezone.utc).date()

    # While the lease runs, the account is busy for everyone ...
    with AccountPool(storage) as pool, pytest.raises(NoAccountAvailable) as info:
        pool.send_mail(subject="Too soon", body="Busy.", to=[send_workers.RECIPIENT])
    assert info.value.reason is NoAccountReason.ALL_BUSY
    assert info.value.retry_after is not None
    assert 0 < info.value.retry_after <= LEASE_TIMEOUT

    # ... and once it ran out (seen from a clock past it), the account sends
    # again, with the dead worker's unit still counted.
    def later() -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=LEASE_TIMEOUT)

    with AccountPool(storage, clock=later) as pool:
        pool.send_mail(
            subject="After expiry", body="Sent.", to=[send_workers.RECIPIENT]
        )
    stored = storage.get(account.id)
    same_day = later().date() == killed_on
    assert stored.sent_count == (2 if same_day else 1)  # across midnight: a new day
    assert stored.in_flight == 0  # the expired slot was taken over, then freed
    assert [str(m.message["Subject"]) for m in smtp_server.messages] == ["After expiry"]
    storage.close()
