"""The mailpool command: the demo, and usage/test against a stored pool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailpool import Account, JSONStorage, SMTPSettings
from mailpool.cli import main
from smtpserver import USERS, SMTPTestServer


def test_demo_sends_until_the_limits_run_out_in_a_real_process() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "mailpool", "demo", "--messages", "11"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = finished.stdout
    assert out.count("sent via") == 9 + 1  # 9 today, 1 the next day
    assert out.count("not sent: all 3 active accounts") == 2
    assert "One day later the counts have reset" in out
    assert "The server received 10 messages" in out
    assert finished.stderr == ""


@pytest.fixture
def stored(tmp_path: Path, smtp_server: SMTPTestServer) -> str:
    url = f"json://{tmp_path}/accounts.json"
    storage = JSONStorage(tmp_path / "accounts.json")
    for email, password in sorted(USERS.items())[:2]:
        storage.add(
            Account(
                email=email,
                owner="acme",
                daily_limit=5,
                smtp=SMTPSettings(
                    host=smtp_server.host,
                    port=smtp_server.port,
                    use_tls=False,
                    username=email,
                    password=password if email.startswith("alice") else "wrong-secret",
                    allow_insecure_auth=True,
                ),
            )
        )
    storage.close()
    return url


def test_usage_lists_every_account_with_its_counts(
    stored: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["usage", stored, "--owner", "acme"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        "alice@example.com",
        "bob@example.com",
    ]
    assert all("sent 0/5\t5 left" in line for line in lines)


def test_test_reports_each_account_without_showing_secrets(
    stored: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test", stored]) == 1  # bob's password is wrong
    captured = capsys.readouterr()
    assert "ok   alice@example.com: Connected to" in captured.out
    assert "FAIL bob@example.com:" in captured.out and "535" in captured.out
    for secret in (*USERS.values(), "wrong-secret"):
        assert secret not in captured.out + captured.err


def test_a_bad_storage_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["usage", "ftp://user:hunter2@host/x"]) == 2
    err = capsys.readouterr().err
    assert "unknown storage URL scheme 'ftp'" in err and "hunter2" not in err
