"""The management commands, as a user runs them (call_command parses the
same arguments as manage.py; the example project's test runs manage.py
itself)."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from django.core.management import CommandError, call_command
from djangotools import RowFactory

from mailpool.contrib.django.models import EmailAccount
from mailpool.contrib.django.storage import DjangoStorage
from mailpool.models import Failure, FailureKind
from smtpserver import USERS, SMTPTestServer

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str, CommandError | None]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except CommandError as exc:
        return out.getvalue(), err.getvalue(), exc
    return out.getvalue(), err.getvalue(), None


@pytest.fixture
def accounts(add_row: RowFactory) -> list[EmailAccount]:
    return [
        add_row(
            "alice@example.com",
            username="alice@example.com",
            password=USERS["alice@example.com"],
        ),
        add_row("bob@example.com", username="bob@example.com", password="wrong"),
        add_row("off@example.com", status="inactive"),
    ]


def test_every_active_account_is_tested(
    accounts: list[EmailAccount], smtp_server: SMTPTestServer
) -> None:
    out, _, error = run("test_email_accounts")
    lines = out.splitlines()
    assert lines[0].startswith("ok") and "alice@example.com" in lines[0]
    assert lines[1].startswith("FAILED") and "bob@example.com" in lines[1]
    assert "off@example.com" not in out
    assert error is not None and "1 of 2 tested accounts failed" in str(error)
    # Testing only reports: no status or count changes.
    assert set(EmailAccount.objects.values_list("status", flat=True)) == {
        "active",
        "inactive",
    }


def test_chosen_accounts_and_json(accounts: list[EmailAccount]) -> None:
    alice, _, off = accounts
    out, _, error = run(
        "test_email_accounts",
        "--account-id",
        alice.pk,
        "--email",
        "OFF@example.com",
        "--json",
    )
    results = json.loads(out)
    assert [r["account_email"] for r in results] == [alice.email, off.email]
    assert [r["success"] for r in results] == [True, True]
    assert set(results[0]) == {"account_id", "account_email", "success", "message"}
    assert error is None


def test_unknown_accounts_and_nothing_tested_fail(accounts: list[EmailAccount]) -> None:
    _, err, error = run("test_email_accounts", "--account-id", "nope")
    assert "no account with id 'nope'" in err
    assert error is not None
    EmailAccount.objects.update(status="inactive")
    _, _, error = run("test_email_accounts")
    assert error is not None and "no account was tested" in str(error)


def test_reset_daily_email_counts(add_row: RowFactory) -> None:
    add_row("a@acme.example", owner="acme", sent_count=3)
    add_row("b@globex.example", owner="globex", sent_count=2)
    out, _, error = run("reset_daily_email_counts", "--owner", "acme")
    assert error is None and "Reset today's count of 1 account of owner 'acme'" in out
    assert sorted(EmailAccount.objects.values_list("sent_count", flat=True)) == [0, 2]
    out, _, _ = run("reset_daily_email_counts")
    assert "of 1 account." in out


def test_revive_reactivates_the_accounts_in_error_that_are_due(
    add_row: RowFactory,
) -> None:
    now = datetime.now(timezone.utc)
    storage = DjangoStorage()
    for email, ago in (("alice@example.com", 600), ("bob@example.com", 60)):
        row = add_row(email)
        storage.record_failure(
            row.pk,
            Failure(
                FailureKind.BROKEN, "554 5.7.1 refused", now - timedelta(seconds=ago)
            ),
        )
    add_row("ops@example.com", status="error")  # by hand: never probed
    out, _, error = run("revive_email_accounts", "--json")
    assert error is None
    assert [(r["account_email"], r["success"]) for r in json.loads(out)] == [
        ("alice@example.com", True)
    ]
    statuses = dict(EmailAccount.objects.values_list("email", "status"))
    assert statuses == {
        "alice@example.com": "active",
        "bob@example.com": "error",
        "ops@example.com": "error",
    }
    out, _, _ = run("revive_email_accounts")
    assert "No account in error is due" in out
    out, _, _ = run("revive_email_accounts", "--after", "30", "--shallow")
    assert out.startswith("revived") and "bob@example.com" in out
    _, _, error = run("revive_email_accounts", "--after", "0")
    assert error is not None and "revive_after" in str(error)
