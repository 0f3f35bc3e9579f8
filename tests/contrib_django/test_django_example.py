"""examples/django_project runs as its README says: manage.py in a child
process, a real SMTP server receiving the campaign."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smtpserver import USERS, SMTPTestServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_project"

SETUP = """
from campaigns.models import Campaign
from mailpool import Account, SMTPSettings
from mailpool.contrib.django.storage import DjangoStorage

storage = DjangoStorage()
rows = []
for name in ("alice", "bob", "carol"):
    smtp = SMTPSettings(
        host="127.0.0.1", port={port}, use_tls=False, allow_insecure_auth=True,
        username=f"{{name}}@example.com", password={passwords}[f"{{name}}@example.com"],
    )
    rows.append(storage.add(Account(
        email=f"{{name}}@example.com", sender_name=name.title(), min_wait_time=0,
        daily_limit=2, smtp=smtp,
    )))
campaign = Campaign.objects.create(
    name="spring", subject="Spring news", body="Hello!",
    recipients="\\n".join(f"reader{{n}}@example.net" for n in range(4)),
)
campaign.accounts.set([rows[0].id, rows[1].id])  # not carol's
"""


def manage(database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "MAILPOOL_TEST_DJANGO"))
    }
    env["EXAMPLE_DATABASE"] = str(database)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.integration
def test_the_example_project_sends_a_campaign_through_its_accounts(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    database = tmp_path / "example.sqlite3"
    steps = [
        ("migrate", "--verbosity", "0"),
        ("shell", "-c", SETUP.format(port=smtp_server.port, passwords=dict(USERS))),
        ("test_email_accounts",),
        ("send_campaign", "spring"),
    ]
    for step in steps:
        done = manage(database, *step)
        assert done.returncode == 0, (step, done.stdout, done.stderr)
    assert "3 of 3 accounts passed" in manage(database, "test_email_accounts").stdout
    messages = smtp_server.wait_for_messages(4)
    assert {m.mail_from for m in messages} == {"alice@example.com", "bob@example.com"}
    assert sorted(r for m in messages for r in m.rcpt_tos) == [
        f"reader{n}@example.net" for n in range(4)
    ]
    assert {str(m.message["From"]) for m in messages} <= {
        "Alice <alice@example.com>",
        "Bob <bob@example.com>",
    }
    # Both assigned accounts are at their limit of 2 now: a second send fails
    # with the reason, through no other account.
    again = manage(database, "send_campaign", "spring")
    assert again.returncode != 0
    assert "daily limit" in again.stderr
    reset = manage(database, "reset_daily_email_counts")
    assert "Reset today's count of 2 accounts." in reset.stdout
