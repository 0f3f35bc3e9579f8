"""``mailpool test-accounts``, ``usage``, ``reset-daily`` and ``send`` in a
real process, against a real local SMTP server and real storages (a JSON
file, a SQLite file, PostgreSQL when ``MAILPOOL_TEST_POSTGRES_URL`` is set)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from mailpool import open_storage
from smtpserver import USERS, SMTPTestServer
from test_cli_support import (
    STORAGE_KINDS,
    WRONG_PASSWORD,
    add_relay_account,
    clean_env,
    empty_storage,
    in_terminal,
    mailpool,
    ok,
)

ALICE, BOB, CAROL = sorted(USERS)


@pytest.fixture(params=STORAGE_KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_storage(request.param, tmp_path) as storage_url:
        yield storage_url


JSON_ONLY = pytest.mark.parametrize("url", ["json"], indirect=True)
"""For what every storage does alike (each command runs on all of them elsewhere)."""


@pytest.fixture
def json_url(tmp_path: Path) -> str:
    return f"json://{tmp_path / 'accounts.json'}"


@pytest.fixture
def team(url: str, smtp_server: SMTPTestServer) -> dict[str, str]:
    """alice (right password, owner acme), bob (wrong password, owner acme,
    tag news), carol (no password, inactive): their ids by email."""
    return {
        ALICE: add_relay_account(
            url, smtp_server, ALICE, USERS[ALICE], "--owner", "acme"
        ),
        BOB: add_relay_account(
            url, smtp_server, BOB, WRONG_PASSWORD, "--owner", "acme", "--tag", "news"
        ),
        CAROL: add_relay_account(url, smtp_server, CAROL, None, "--status", "inactive"),
    }


# ------------------------------------------------------------ test-accounts


def test_test_accounts_reports_each_active_account(
    url: str, team: dict[str, str], smtp_server: SMTPTestServer
) -> None:
    result = mailpool("test-accounts", storage=url)
    assert result.code == 1  # bob's password is wrong
    alice, bob = result.lines  # carol is inactive: not tested
    assert alice.startswith(f"ok    {ALICE}  Connected to 127.0.0.1:")
    assert "logged in as alice@example.com" in alice
    assert bob.startswith(f"FAIL  {BOB}  ") and "535" in bob
    assert result.err == ""
    # Tests only report: bob's status is unchanged.
    assert (
        json.loads(ok("accounts", "show", BOB, "--json", storage=url).out)["status"]
        == "active"
    )
    assert smtp_server.messages == []


@JSON_ONLY
def test_test_accounts_json_lists_the_results(url: str, team: dict[str, str]) -> None:
    result = mailpool("test-accounts", "--json", storage=url)
    assert result.code == 1
    results = json.loads(result.out)
    assert [(r["account_email"], r["success"]) for r in results] == [
        (ALICE, True),
        (BOB, False),
    ]
    assert results[0]["account_id"] == team[ALICE]
    assert all(r["message"] for r in results)


def test_test_accounts_scoped_by_id_email_owner_and_tag(
    json_url: str, smtp_server: SMTPTestServer
) -> None:
    url = json_url
    ids = {
        ALICE: add_relay_account(
            url, smtp_server, ALICE, USERS[ALICE], "--owner", "acme"
        ),
        BOB: add_relay_account(url, smtp_server, BOB, WRONG_PASSWORD, "--tag", "news"),
        CAROL: add_relay_account(url, smtp_server, CAROL, None, "--status", "error"),
    }

    def tested(*args: str) -> tuple[int, list[str]]:
        result = mailpool("test-accounts", "--json", *args, storage=url)
        return result.code, [r["account_email"] for r in json.loads(result.out)]

    assert tested("--account-id", ids[ALICE]) == (0, [ALICE])
    assert tested("--email", BOB) == (1, [BOB])
    assert tested("--owner", "acme") == (0, [ALICE])
    assert tested("--tag", "news") == (1, [BOB])
    # A named account is tested whatever its status (to check before reactivating).
    assert tested("--email", CAROL, "--account-id", ids[ALICE]) == (0, [ALICE, CAROL])
    unknown = mailpool("test-accounts", "--email", "nobody@example.com", storage=url)
    assert unknown.code == 2 and "nobody@example.com" in unknown.err
    outside = mailpool("test-accounts", "--email", BOB, "--owner", "acme", storage=url)
    assert outside.code == 2 and "not in the scope" in outside.err


def test_test_accounts_fails_when_nothing_was_tested(json_url: str) -> None:
    ok(
        "accounts",
        "add",
        "a@example.com",
        "--host",
        "h",
        "--status",
        "inactive",
        "--no-password",
        storage=json_url,
    )
    result = mailpool("test-accounts", storage=json_url)
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith("mailpool: no active account to test in json://")
    as_json = mailpool("test-accounts", "--json", "--owner", "acme", storage=json_url)
    assert as_json.code == 1 and json.loads(as_json.out) == []
    assert "(owner 'acme')" in as_json.err


def test_test_accounts_reports_an_unreachable_server(json_url: str) -> None:
    ok(
        "accounts",
        "add",
        "a@example.com",
        "--host",
        "127.0.0.1",
        "--port",
        "1",
        "--plain",
        "--no-password",
        storage=json_url,
    )
    result = mailpool("test-accounts", "--timeout", "5", storage=json_url)
    assert result.code == 1
    assert result.out.startswith("FAIL  a@example.com  ")


def test_test_accounts_shows_progress_for_many_accounts_on_a_terminal(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    dump = tmp_path / "many.csv"
    rows = [
        f"sender{n}@example.com,{smtp_server.host},{smtp_server.port},false"
        for n in range(12)
    ]
    dump.write_text("email,host,port,use_tls\n" + "\n".join(rows) + "\n")
    url = f"json://{tmp_path / 'accounts.json'}"
    ok("accounts", "import", str(dump), storage=url)
    code, shown, out = in_terminal(["test-accounts", "--storage", url], env=clean_env())
    assert code == 0, shown
    assert "testing [" in shown and "12/12" in shown
    assert len(out.splitlines()) == 12
    assert all(line.startswith("ok    sender") for line in out.splitlines())
    # Not on a terminal: no progress, only the results.
    assert ok("test-accounts", storage=url).err == ""


# -------------------------------------------------------------------- send


def test_send_delivers_through_an_account_of_the_pool(
    url: str, team: dict[str, str], smtp_server: SMTPTestServer
) -> None:
    send = ["send", "--to", "reader@example.org", "--subject", "Hello", "--body", "Hi"]
    # In owner acme, bob's login fails: whichever is tried first, alice sends.
    result = ok(*send, "--owner", "acme", storage=url)
    assert result.out.startswith("sent <") and f" via {ALICE} (" in result.out
    sent = json.loads(ok(*send, "--owner", "acme", "--json", storage=url).out)
    assert sent["account_email"] == ALICE and sent["account_id"] == team[ALICE]
    assert set(sent) >= {"message_id", "sent_at", "attempts", "refused_recipients"}
    first, second = smtp_server.wait_for_messages(2)
    assert first.mail_from == second.mail_from == ALICE
    assert second.message["Message-ID"] == sent["message_id"]
    assert second.message["Subject"] == "Hello"


@JSON_ONLY
def test_send_text_and_html_from_files(
    url: str, team: dict[str, str], smtp_server: SMTPTestServer, tmp_path: Path
) -> None:
    body, html = tmp_path / "body.txt", tmp_path / "body.html"
    body.write_text("Plain ünïcode body\n")
    html.write_text("<p>HTML body</p>\n")
    result = ok(
        "send",
        "--to",
        "Reader <reader@example.org>",
        "--to",
        "two@example.org",
        "--cc",
        "cc@example.org",
        "--reply-to",
        "reply@example.org",
        "--subject",
        "Files",
        "--body-file",
        str(body),
        "--html-file",
        str(html),
        "--owner",
        "acme",
        "--json",
        storage=url,
    )
    sent = json.loads(result.out)
    assert sent["account_email"] in (ALICE, BOB)
    assert sent["attempts"] >= 1
    [message] = smtp_server.wait_for_messages(1)
    assert message.rcpt_tos == (
        "reader@example.org",
        "two@example.org",
        "cc@example.org",
    )
    assert message.message["Message-ID"] == sent["message_id"]
    assert message.message["Reply-To"] == "reply@example.org"
    plain = message.message.get_body(("plain",))
    rich = message.message.get_body(("html",))
    assert plain is not None and rich is not None
    assert plain.get_content() == "Plain ünïcode body\n"
    assert rich.get_content() == "<p>HTML body</p>\n"


def test_send_reads_the_body_from_stdin(
    json_url: str, smtp_server: SMTPTestServer
) -> None:
    add_relay_account(json_url, smtp_server, ALICE, None)
    result = ok(
        "send",
        "--to",
        "r@example.org",
        "--subject",
        "S",
        "--body-file",
        "-",
        storage=json_url,
        stdin="from stdin\n",
    )
    assert result.out.startswith("sent <") and f"via {ALICE} (1 attempt)" in result.out
    [message] = smtp_server.wait_for_messages(1)
    body = message.message.get_body(("plain",))
    assert body is not None and body.get_content() == "from stdin\n"


def test_a_login_failure_fails_the_send_and_marks_the_account(
    url: str, team: dict[str, str], smtp_server: SMTPTestServer
) -> None:
    result = mailpool(
        "send",
        "--to",
        "r@example.org",
        "--subject",
        "S",
        "--body",
        "B",
        "--tag",
        "news",
        storage=url,
    )
    assert result.code == 1
    assert "535" in result.err and result.out == ""
    assert smtp_server.messages == []
    usage = {
        row["email"]: row for row in json.loads(ok("usage", "--json", storage=url).out)
    }
    assert usage[BOB]["status"] == "error"
    assert "535" in usage[BOB]["last_error"]
    assert usage[BOB]["next_send_in"] is None
    assert usage[BOB]["sent_today"] == 0  # a failed send does not count
    # Reactivated, bob is active again with no error (his password is still wrong).
    ok("accounts", "set-status", BOB, "active", storage=url)
    shown = json.loads(ok("accounts", "show", BOB, "--json", storage=url).out)
    assert (shown["status"], shown["status_reason"]) == ("active", None)


def test_a_rejected_recipient_fails_the_send(
    json_url: str, smtp_server: SMTPTestServer
) -> None:
    add_relay_account(json_url, smtp_server, ALICE, None)
    smtp_server.reject_recipient("nobody@example.org")
    result = mailpool(
        "send",
        "--to",
        "nobody@example.org",
        "--subject",
        "S",
        "--body",
        "B",
        storage=json_url,
    )
    assert result.code == 1 and "550" in result.err


def test_no_account_available_fails_the_send(
    json_url: str, smtp_server: SMTPTestServer
) -> None:
    add_relay_account(json_url, smtp_server, ALICE, None, "--daily-limit", "1")
    send = ["send", "--to", "r@example.org", "--subject", "S", "--body", "B"]
    ok(*send, storage=json_url)
    result = mailpool(*send, storage=json_url)
    assert result.code == 1
    assert "reached the daily limit" in result.err
    assert len(smtp_server.messages) == 1


def test_send_waits_for_the_minimum_wait_with_wait(
    json_url: str, smtp_server: SMTPTestServer
) -> None:
    add_relay_account(json_url, smtp_server, ALICE, None, "--min-wait-time", "1")
    send = ["send", "--to", "r@example.org", "--subject", "S", "--body", "B"]
    ok(*send, storage=json_url)
    ok(*send, "--wait", "30", storage=json_url)
    first, second = smtp_server.wait_for_messages(2)
    assert second.received_at - first.received_at >= 0.9


def test_send_refuses_bad_input(json_url: str, smtp_server: SMTPTestServer) -> None:
    add_relay_account(json_url, smtp_server, ALICE, None)
    bad_to = mailpool(
        "send",
        "--to",
        "not an address",
        "--subject",
        "S",
        "--body",
        "B",
        storage=json_url,
    )
    assert bad_to.code == 2
    missing = mailpool(
        "send",
        "--to",
        "r@example.org",
        "--subject",
        "S",
        "--body-file",
        "/nonexistent/body.txt",
        storage=json_url,
    )
    assert (
        missing.code == 2
        and "cannot read the body /nonexistent/body.txt" in missing.err
    )
    assert smtp_server.messages == []


# ------------------------------------------------------ usage, reset-daily


@JSON_ONLY
def test_usage_shows_counts_limits_and_the_next_send(
    url: str, team: dict[str, str], smtp_server: SMTPTestServer
) -> None:
    for _ in range(2):
        ok(
            "send",
            "--to",
            "r@example.org",
            "--subject",
            "S",
            "--body",
            "B",
            "--owner",
            "acme",
            storage=url,
        )
    rows = json.loads(ok("usage", "--json", storage=url).out)
    assert [row["email"] for row in rows] == [ALICE, BOB, CAROL]
    alice, _bob, carol = rows
    assert (alice["sent_today"], alice["daily_limit"], alice["remaining"]) == (
        2,
        30,
        28,
    )
    assert alice["next_send_in"] == 0 and alice["last_error"] is None
    datetime.fromisoformat(alice["next_send_at"])
    assert carol["status"] == "inactive" and carol["next_send_in"] is None
    table = ok("usage", storage=url).lines
    assert table[0].split() == [
        "EMAIL",
        "STATUS",
        "SENT",
        "LIMIT",
        "LEFT",
        "NEXT",
        "SEND",
        "LAST",
        "ERROR",
        "ERROR",
        "AT",
    ]
    assert table[1].split()[:6] == [ALICE, "active", "2", "30", "28", "now"]
    assert table[3].split()[:6] == [CAROL, "inactive", "0", "30", "30", "-"]
    scoped = json.loads(ok("usage", "--json", "--tag", "news", storage=url).out)
    assert [row["email"] for row in scoped] == [BOB]


def test_usage_says_when_an_account_at_its_limit_may_send_again(
    json_url: str, smtp_server: SMTPTestServer
) -> None:
    add_relay_account(json_url, smtp_server, ALICE, None, "--daily-limit", "1")
    add_relay_account(json_url, smtp_server, BOB, None, "--min-wait-time", "600")
    send = ["send", "--to", "r@example.org", "--subject", "S", "--body", "B"]
    ok(*send, storage=json_url)
    ok(*send, storage=json_url)  # both have sent once now
    rows = {
        r["email"]: r for r in json.loads(ok("usage", "--json", storage=json_url).out)
    }
    assert rows[ALICE]["remaining"] == 0
    assert 0 < rows[ALICE]["next_send_in"] <= 24 * 3600  # at midnight UTC
    assert 590 < rows[BOB]["next_send_in"] <= 600  # the minimum wait
    lines = ok("usage", storage=json_url).lines
    assert " in 9m " in lines[2] or " in 10m " in lines[2]


def test_usage_counts_the_day_in_the_account_time_zone(
    json_url: str, smtp_server: SMTPTestServer
) -> None:
    for email, zone in ((ALICE, "Asia/Tokyo"), (BOB, "America/New_York")):
        add_relay_account(
            json_url, smtp_server, email, None, "--daily-limit", "0", "--timezone", zone
        )
    add_relay_account(json_url, smtp_server, CAROL, None, "--daily-limit", "1")
    ok(
        "send",
        "--to",
        "r@example.org",
        "--subject",
        "S",
        "--body",
        "B",
        storage=json_url,
    )
    rows = {
        r["email"]: r for r in json.loads(ok("usage", "--json", storage=json_url).out)
    }
    assert rows[ALICE]["timezone"] == "Asia/Tokyo"
    assert rows[ALICE]["next_send_in"] is None  # a limit of 0 never sends
    assert rows[CAROL]["remaining"] == 0
    now = datetime.now(timezone.utc)
    midnight_utc = datetime.combine(
        now.date() + timedelta(days=1), time(), timezone.utc
    )
    assert rows[CAROL]["next_send_in"] == pytest.approx(
        (midnight_utc - now).total_seconds(), abs=60
    )
    bad = mailpool(
        "accounts",
        "add",
        "d@example.com",
        "--host",
        "h",
        "--no-password",
        "--timezone",
        "Mars/Olympus",
        storage=json_url,
    )
    assert bad.code == 2 and "time zone" in bad.err


def test_reset_daily_sets_the_counts_to_zero(
    url: str, team: dict[str, str], smtp_server: SMTPTestServer
) -> None:
    for _ in range(2):
        ok(
            "send",
            "--to",
            "r@example.org",
            "--subject",
            "S",
            "--body",
            "B",
            "--owner",
            "acme",
            storage=url,
        )
    assert json.loads(
        ok("reset-daily", "--owner", "other", "--json", storage=url).out
    ) == {"reset": 0, "owner": "other"}
    assert ok("reset-daily", "--owner", "acme", storage=url).out == (
        "reset the daily count of 1 account (owner 'acme')\n"
    )
    rows = json.loads(ok("usage", "--json", storage=url).out)
    assert all(row["sent_today"] == 0 for row in rows)
    assert json.loads(ok("reset-daily", "--json", storage=url).out)["reset"] == 0


@JSON_ONLY
def test_no_password_is_ever_printed_on_the_way(url: str, team: dict[str, str]) -> None:
    # mailpool() checks every run for PASSWORD, WRONG_PASSWORD and USERS'
    # passwords; here every command that shows accounts runs once more.
    for args in (
        ["accounts", "list"],
        ["accounts", "list", "--json"],
        ["accounts", "show", BOB],
        ["accounts", "show", BOB, "--json"],
        ["accounts", "export"],
        ["accounts", "export", "--format", "csv"],
        ["usage"],
        ["usage", "--json"],
        ["test-accounts"],
        ["test-accounts", "--json"],
        ["-v", "test-accounts"],
    ):
        mailpool(*args, storage=url)
    storage = open_storage(url)
    try:
        stored = storage.get_by_email(BOB).smtp.password
        assert stored is not None and stored.get_secret_value() == WRONG_PASSWORD
    finally:
        storage.close()
