"""pool.explain() and ``mailpool explain``: why an account can or cannot send."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mailpool import (
    Account,
    AccountPool,
    AccountStatus,
    InMemoryStorage,
    JSONStorage,
    SMTPSettings,
)
from mailpool.models import Failure, FailureKind
from mailpool.testing import ManualClock, RecordingTransport
from pooltools import AccountFactory, PoolFactory, send
from smtpserver import SMTPTestServer
from test_cli_support import ok

START = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
MIDNIGHT = datetime(2026, 1, 2, tzinfo=timezone.utc)
SMTP = SMTPSettings(host="smtp.example.com")


def _team(storage: InMemoryStorage) -> dict[str, Account]:
    day = START.date()
    accounts = [
        Account(email="a-ok@example.com", smtp=SMTP),
        Account(email="b-off@example.com", smtp=SMTP, status=AccountStatus.INACTIVE),
        Account(
            email="c-err@example.com",
            smtp=SMTP,
            status=AccountStatus.ERROR,
            status_reason="535 5.7.8 refused",
        ),
        Account(
            email="d-full@example.com",
            smtp=SMTP,
            daily_limit=50,
            sent_count=50,
            count_day=day,
        ),
        Account(
            email="e-wait@example.com",
            smtp=SMTP,
            min_wait_time=10,
            last_sent_at=START - timedelta(seconds=4),
        ),
        Account(
            email="f-busy@example.com",
            smtp=SMTP,
            in_flight=1,
            lease_until=START + timedelta(seconds=60),
        ),
        Account(email="g-quota@example.com", smtp=SMTP),
        Account(email="h-cool@example.com", smtp=SMTP),
    ]
    storage.add_many(accounts)
    storage.record_failure(
        accounts[6].id,
        Failure(FailureKind.QUOTA, "550 5.4.5 Daily user sending quota", START),
    )
    storage.record_failure(
        accounts[7].id,
        Failure(FailureKind.THROTTLED, "421 4.7.0 Try again later", START, 120),
    )
    return {account.email.split("@")[0]: account for account in accounts}


def test_explain_says_for_each_account_why_and_when() -> None:
    storage = InMemoryStorage()
    _team(storage)
    with AccountPool(
        storage, clock=ManualClock(START), transport=RecordingTransport()
    ) as pool:
        rows = {row.account_email.split("@")[0]: row for row in pool.explain()}
    assert list(rows) == sorted(rows)
    ok_row = rows["a-ok"]
    assert ok_row.eligible and ok_row.state == "eligible"
    assert ok_row.next_send_at == START and ok_row.reason == "eligible now"
    assert rows["b-off"].state == "inactive" and rows["b-off"].next_send_at is None
    assert rows["c-err"].state == "error"
    assert "535 5.7.8 refused" in rows["c-err"].reason
    full = rows["d-full"]
    assert full.state == "at_limit" and "50/50 sent" in full.reason
    assert full.next_send_at == MIDNIGHT
    wait = rows["e-wait"]
    assert wait.state == "waiting" and wait.next_send_at == START + timedelta(seconds=6)
    assert "waiting until 2026-01-01 09:00:06 UTC" in wait.reason
    busy = rows["f-busy"]
    assert busy.state == "in_flight" and "1/1 sends in flight" in busy.reason
    quota = rows["g-quota"]
    assert quota.state == "quota_hold" and quota.next_send_at == MIDNIGHT
    assert "held at provider quota until 2026-01-02 00:00:00 UTC" in quota.reason
    assert quota.last_error == "550 5.4.5 Daily user sending quota"
    cool = rows["h-cool"]
    assert cool.state == "cooling_down"
    assert cool.next_send_at == START + timedelta(seconds=120)
    assert sum(row.eligible for row in rows.values()) == 1


def test_explain_agrees_with_what_the_pool_claims(
    add: AccountFactory, make_pool: PoolFactory
) -> None:
    add("alice@example.com", daily_limit=1)
    pool = make_pool()
    assert pool.explain()[0].eligible
    send(pool)
    row = pool.explain()[0]
    assert not row.eligible and "1/1 sent today" in row.reason


def test_cli_explain_prints_a_table_and_json(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    path = tmp_path / "accounts.json"
    storage = JSONStorage(path)
    settings = SMTPSettings(host=smtp_server.host, port=smtp_server.port)
    storage.add(Account(email="alice@example.com", smtp=settings))
    storage.add(
        Account(
            email="bob@example.com",
            smtp=settings,
            status=AccountStatus.ERROR,
            status_reason="553 5.7.1 not owned by user",
        )
    )
    url = f"json://{path}"
    rows = json.loads(ok("explain", "--json", storage=url).out)
    assert [row["eligible"] for row in rows] == [True, False]
    assert rows[1]["state"] == "error" and rows[1]["next_send_at"] is None
    assert "not owned by user" in rows[1]["reasons"][0]
    table = ok("explain", storage=url).lines
    assert table[0].split()[:4] == ["EMAIL", "ELIGIBLE", "STATE", "NEXT"]
    assert "yes" in table[1] and "eligible now" in table[1]
    assert "error" in table[2] and "not owned by user" in table[2]
