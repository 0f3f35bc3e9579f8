"""``mailpool accounts ...`` in a real process, on a JSON file, a SQLite file
and PostgreSQL (when ``MAILPOOL_TEST_POSTGRES_URL`` is set)."""

from __future__ import annotations

import csv
import io
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailpool import open_storage
from test_cli_support import (
    NEEDS_POSTGRES,
    PASSWORD,
    STORAGE_KINDS,
    clean_env,
    empty_storage,
    in_terminal,
    mailpool,
    ok,
)


@pytest.fixture(params=STORAGE_KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A storage of each kind that does not exist yet."""
    with empty_storage(request.param, tmp_path) as storage_url:
        yield storage_url


@pytest.fixture
def json_url(tmp_path: Path) -> str:
    """A JSON storage that does not exist yet, for what every kind does alike."""
    return f"json://{tmp_path / 'accounts.json'}"


def add(url: str, email: str, *options: str, password: str | None = None) -> Any:
    """``accounts add --json``; the account as printed."""
    args = ["accounts", "add", email, "--json", *options]
    if password is None:
        args.append("--no-password")
    else:
        args.append("--password-stdin")
    return json.loads(ok(*args, storage=url, stdin=password).out)


def show(url: str, key: str) -> Any:
    return json.loads(ok("accounts", "show", key, "--json", storage=url).out)


def test_add_takes_every_field_as_an_option(url: str) -> None:
    printed = add(
        url,
        "alice@example.com",
        "--id",
        "alice-1",
        "--sender-name",
        "Alice Example",
        "--owner",
        "acme",
        "--tag",
        "spring",
        "--tag",
        "news",
        "--status",
        "pending",
        "--daily-limit",
        "50",
        "--min-wait-time",
        "2.5",
        "--max-in-flight",
        "3",
        "--timezone",
        "Europe/Paris",
        "--host",
        "smtp.example.com",
        "--ssl",
        "--username",
        "alice-login",
        "--connection-type",
        "imap/smtp",
        password=PASSWORD,
    )
    assert printed == show(url, "alice-1") == show(url, "ALICE@example.com")
    assert {key: printed[key] for key in printed if key != "smtp"} == {
        "id": "alice-1",
        "email": "alice@example.com",
        "sender_name": "Alice Example",
        "owner": "acme",
        "tags": ["news", "spring"],
        "connection_type": "imap/smtp",
        "status": "pending",
        "status_reason": None,
        "daily_limit": 50,
        "min_wait_time": 2.5,
        "max_in_flight": 3,
        "timezone": "Europe/Paris",
        "oauth2": None,
        "sent_count": 0,
        "count_day": None,
        "last_sent_at": None,
        "in_flight": 0,
        "lease_until": None,
        "paused_until": None,
        "pause_kind": None,
        "consecutive_failures": 0,
        "last_error": None,
        "last_error_at": None,
        "secrets_set": ["smtp.password"],
    }
    assert printed["smtp"] == {
        "host": "smtp.example.com",
        "port": 465,
        "use_tls": False,
        "use_ssl": True,
        "username": "alice-login",
        "allow_insecure_auth": False,
    }
    # The password really is stored, although it is never printed.
    storage = open_storage(url)
    try:
        password = storage.get("alice-1").smtp.password
        assert password is not None and password.get_secret_value() == PASSWORD
    finally:
        storage.close()


def test_add_defaults_to_starttls_on_587(json_url: str) -> None:
    url = json_url
    smtp = add(url, "a@example.com", "--host", "smtp.example.com")["smtp"]
    assert (smtp["port"], smtp["use_tls"], smtp["use_ssl"]) == (587, True, False)
    plain = add(url, "b@example.com", "--host", "relay", "--plain")["smtp"]
    assert (plain["port"], plain["use_tls"]) == (25, False)


@pytest.mark.parametrize(
    ("provider", "host", "port", "kind"),
    [
        ("gmail", "smtp.gmail.com", 587, "gmail"),
        ("outlook", "smtp.office365.com", 587, "outlook"),
        ("yahoo", "smtp.mail.yahoo.com", 465, "yahoo"),
        ("zoho", "smtp.zoho.com", 465, "imap/smtp"),
    ],
)
def test_add_with_a_provider_uses_its_preset(
    tmp_path: Path, provider: str, host: str, port: int, kind: str
) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    printed = add(url, "al@example.com", "--provider", provider, password=PASSWORD)
    assert printed["smtp"]["host"] == host and printed["smtp"]["port"] == port
    assert printed["smtp"]["username"] == "al@example.com"
    assert printed["connection_type"] == kind


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--provider", "gmail", "--host", "x"], "leave out --host"),
        (["--provider", "gmail", "--ssl"], "--starttls/--ssl/--plain"),
        ([], "pass --host HOST"),
        (["--host", "bad host"], "host must be a host name"),
        (["--host", "h", "--port", "70000"], "port"),
        (["--host", "h", "--daily-limit", "-1"], "daily_limit"),
        (["--host", "h", "--max-in-flight", "0"], "max_in_flight"),
        (["--host", "h", "--sender-name", "A\nBcc: x@evil.example"], "sender_name"),
    ],
)
def test_add_refuses_invalid_options(
    tmp_path: Path, options: list[str], message: str
) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    result = mailpool(
        "accounts", "add", "a@example.com", "--no-password", *options, storage=url
    )
    assert result.code == 2
    assert message in result.err
    assert not (tmp_path / "accounts.json").exists()


def test_a_password_over_plain_text_needs_allow_insecure_auth(tmp_path: Path) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    args = ["accounts", "add", "a@example.com", "--host", "relay", "--plain"]
    refused = mailpool(*args, "--password-stdin", storage=url, stdin=PASSWORD)
    assert refused.code == 2 and "allow_insecure_auth" in refused.err
    ok(*args, "--allow-insecure-auth", "--password-stdin", storage=url, stdin=PASSWORD)


def test_the_password_comes_from_an_environment_variable(tmp_path: Path) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    args = [
        "accounts",
        "add",
        "a@example.com",
        "--host",
        "h",
        "--password-env",
        "SMTP_PW",
    ]
    missing = mailpool(*args, storage=url)
    assert missing.code == 2 and "SMTP_PW is not set" in missing.err
    ok(*args, storage=url, env={"SMTP_PW": PASSWORD})
    storage = open_storage(url)
    try:
        password = storage.get_by_email("a@example.com").smtp.password
        assert password is not None and password.get_secret_value() == PASSWORD
    finally:
        storage.close()


def test_password_stdin_takes_the_line_without_its_newline(tmp_path: Path) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    args = ["accounts", "add", "a@example.com", "--host", "h", "--password-stdin"]
    empty = mailpool(*args, storage=url, stdin="\n")
    assert empty.code == 2 and "holds no password" in empty.err
    ok(*args, storage=url, stdin=PASSWORD + "\r\n")
    stored = json.loads((tmp_path / "accounts.json").read_text())
    assert stored["accounts"][0]["smtp"]["password"] == PASSWORD


def test_without_a_password_option_or_a_terminal_add_refuses(tmp_path: Path) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    result = mailpool("accounts", "add", "a@example.com", "--host", "h", storage=url)
    assert result.code == 2
    assert "--password-stdin, --password-env VAR or --no-password" in result.err
    assert not (tmp_path / "accounts.json").exists()


def test_on_a_terminal_add_asks_for_the_password(tmp_path: Path) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    code, shown, out = in_terminal(
        ["accounts", "add", "a@example.com", "--host", "h", "--storage", url],
        env=clean_env(),
        answer=PASSWORD,
    )
    assert code == 0, shown
    assert "SMTP password for a@example.com" in shown
    assert "added a@example.com" in out
    stored = json.loads((tmp_path / "accounts.json").read_text())
    assert stored["accounts"][0]["smtp"]["password"] == PASSWORD


def test_a_duplicate_email_is_refused(url: str) -> None:
    add(url, "a@example.com", "--host", "h")
    result = mailpool(
        "accounts", "add", "A@example.com", "--host", "h", "--no-password", storage=url
    )
    assert result.code == 2 and "already uses" in result.err
    assert len(json.loads(ok("accounts", "list", "--json", storage=url).out)) == 1


def test_list_prints_a_table_and_filters(json_url: str) -> None:
    url = json_url
    add(url, "b@example.com", "--host", "h2", "--owner", "acme", "--tag", "x")
    add(url, "a@example.com", "--host", "h1", "--owner", "other")
    add(url, "c@example.com", "--host", "h3", "--owner", "acme", "--status", "inactive")
    lines = ok("accounts", "list", storage=url).lines
    assert lines[0].split() == [
        "ID",
        "EMAIL",
        "OWNER",
        "TAGS",
        "STATUS",
        "LIMIT",
        "SERVER",
    ]
    assert [line.split()[1] for line in lines[1:]] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]
    assert "h2:587" in lines[2] and "acme" in lines[2]

    def emails(*filters: str) -> list[str]:
        out = ok("accounts", "list", "--json", *filters, storage=url).out
        return [account["email"] for account in json.loads(out)]

    assert emails("--owner", "acme") == ["b@example.com", "c@example.com"]
    assert emails("--tag", "x") == ["b@example.com"]
    assert emails("--status", "inactive") == ["c@example.com"]
    assert emails("--owner", "nobody") == []
    assert (
        ok("accounts", "list", "--owner", "nobody", storage=url).out == "no accounts\n"
    )


def test_show_prints_every_field_and_hides_the_password(url: str) -> None:
    added = add(url, "a@example.com", "--host", "h", "--tag", "t", password=PASSWORD)
    out = ok("accounts", "show", "a@example.com", storage=url).out
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["id"].strip() == added["id"]
    assert fields["smtp.host"].strip() == "h"
    assert fields["smtp.password"].strip() == "(set)"
    assert fields["tags"].strip() == "t"
    missing = mailpool("accounts", "show", "nobody@example.com", storage=url)
    assert missing.code == 2
    assert "no account with id or email 'nobody@example.com'" in missing.err


def test_set_status_reactivates_an_account_in_error(url: str) -> None:
    added = add(url, "a@example.com", "--host", "h")
    result = ok(
        "accounts",
        "set-status",
        "a@example.com",
        "error",
        "--reason",
        "535 authentication failed",
        "--json",
        storage=url,
    )
    assert json.loads(result.out) == {
        "id": added["id"],
        "email": "a@example.com",
        "previous_status": "active",
        "status": "error",
        "status_reason": "535 authentication failed",
    }
    assert show(url, added["id"])["status_reason"] == "535 authentication failed"
    text = ok("accounts", "set-status", added["id"], "active", storage=url).out
    assert text == "a@example.com: error -> active\n"
    shown = show(url, "a@example.com")
    assert (shown["status"], shown["status_reason"]) == ("active", None)
    refused = mailpool(
        "accounts",
        "set-status",
        "a@example.com",
        "active",
        "--reason",
        "x",
        storage=url,
    )
    assert refused.code == 2


def test_remove_deletes_by_id_or_email(url: str) -> None:
    first = add(url, "a@example.com", "--host", "h")
    add(url, "b@example.com", "--host", "h")
    assert ok("accounts", "remove", first["id"], storage=url).out == (
        f"removed a@example.com (id {first['id']})\n"
    )
    removed = json.loads(
        ok("accounts", "remove", "B@example.com", "--json", storage=url).out
    )
    assert removed["removed"]["email"] == "b@example.com"
    assert json.loads(ok("accounts", "list", "--json", storage=url).out) == []
    assert mailpool("accounts", "remove", "a@example.com", storage=url).code == 2


# ------------------------------------------------------------ import/export


@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [
        ("json", "sqlite"),
        ("sqlite", "json"),
        pytest.param("postgresql", "json", marks=NEEDS_POSTGRES),
        pytest.param("json", "postgresql", marks=NEEDS_POSTGRES),
    ],
)
def test_export_with_secrets_imports_back_into_another_storage(
    source_kind: str, target_kind: str, tmp_path: Path
) -> None:
    source_folder = tmp_path / "source"
    source_folder.mkdir()
    with empty_storage(source_kind, source_folder) as url:
        _round_trip(url, target_kind, tmp_path)


def _round_trip(url: str, target_kind: str, tmp_path: Path) -> None:
    add(
        url,
        "a@example.com",
        "--host",
        "h",
        "--owner",
        "acme",
        "--tag",
        "t1",
        "--tag",
        "t2",
        "--sender-name",
        "Ä Ü",
        password=PASSWORD,
    )
    add(
        url,
        "b@example.com",
        "--provider",
        "gmail",
        "--daily-limit",
        "5",
        password="bob-" + PASSWORD,
    )
    exported = ok(
        "accounts", "export", "--with-secrets", storage=url, secrets_allowed=True
    )
    document = json.loads(exported.out)
    assert document["version"] == 1
    assert [a["smtp"]["password"] for a in document["accounts"]] == [
        PASSWORD,
        "bob-" + PASSWORD,
    ]
    dump = tmp_path / "export.json"
    dump.write_text(exported.out)

    target_folder = tmp_path / "target"
    target_folder.mkdir()
    with empty_storage(target_kind, target_folder) as target:
        imported = ok("accounts", "import", str(dump), "--json", storage=target)
        assert json.loads(imported.out) == {"imported": 2}
        again = ok(
            "accounts", "export", "--with-secrets", storage=target, secrets_allowed=True
        )
    assert json.loads(again.out) == document


def test_export_leaves_secrets_out(json_url: str, tmp_path: Path) -> None:
    url = json_url
    add(url, "a@example.com", "--host", "h", password=PASSWORD)
    for args in (["--format", "json"], ["--format", "csv"]):
        out = ok("accounts", "export", *args, storage=url).out  # checked: no secret
        assert "password" not in out
    # An export without secrets imports as accounts without a password.
    dump = tmp_path / "public.json"
    dump.write_text(ok("accounts", "export", storage=url).out)
    target = f"json://{tmp_path / 'target.json'}"
    ok("accounts", "import", str(dump), storage=target)
    assert show(target, "a@example.com")["secrets_set"] == []


def test_csv_export_imports_back(json_url: str, tmp_path: Path) -> None:
    url = json_url
    add(
        url,
        "a@example.com",
        "--host",
        "h",
        "--owner",
        "acme",
        "--tag",
        "x",
        "--tag",
        "y",
        "--min-wait-time",
        "0.5",
        "--plain",
        "--allow-insecure-auth",
        password=PASSWORD,
    )
    add(url, "b@example.com", "--host", "h2", "--status", "inactive")
    out = ok(
        "accounts",
        "export",
        "--format",
        "csv",
        "--with-secrets",
        storage=url,
        secrets_allowed=True,
    ).out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["email"] for row in rows] == ["a@example.com", "b@example.com"]
    assert rows[0]["tags"] == "x;y" and rows[0]["password"] == PASSWORD
    assert rows[0]["use_tls"] == "false" and rows[0]["host"] == "h"
    dump = tmp_path / "accounts.csv"
    dump.write_text(out)
    target = f"json://{tmp_path / 'target.json'}"
    assert ok("accounts", "import", str(dump), storage=target).out.startswith(
        "imported 2 accounts into json://"
    )
    source = json.loads(
        ok(
            "accounts", "export", "--with-secrets", storage=url, secrets_allowed=True
        ).out
    )
    copy = json.loads(
        ok(
            "accounts", "export", "--with-secrets", storage=target, secrets_allowed=True
        ).out
    )
    assert copy == source


def test_import_reads_a_hand_written_csv_with_a_provider_column(tmp_path: Path) -> None:
    dump = tmp_path / "team.csv"
    dump.write_text(
        "email,sender_name,provider,password,tags,daily_limit\n"
        f"a@example.com,Alice,gmail,{PASSWORD},sales; spring,40\n"
        "\n"
        "b@example.com,Bob,,,,\n",
        encoding="utf-8",
    )
    url = f"json://{tmp_path / 'accounts.json'}"
    # b has no provider and no host: the error names the line, nothing is stored.
    result = mailpool("accounts", "import", str(dump), storage=url)
    assert result.code == 2
    assert "team.csv, line 4 (b@example.com)" in result.err
    assert "nothing imported" in result.err
    assert not (tmp_path / "accounts.json").exists()
    dump.write_text(dump.read_text().replace("Bob,,", "Bob,zoho,"))
    ok("accounts", "import", str(dump), storage=url)
    alice = show(url, "a@example.com")
    assert alice["tags"] == ["sales", "spring"] and alice["daily_limit"] == 40
    assert alice["smtp"]["host"] == "smtp.gmail.com"
    assert alice["secrets_set"] == ["smtp.password"]
    assert show(url, "b@example.com")["smtp"]["host"] == "smtp.zoho.com"


def test_import_is_atomic_on_a_duplicate(url: str, tmp_path: Path) -> None:
    add(url, "a@example.com", "--host", "h")
    dump = tmp_path / "new.json"
    dump.write_text(
        json.dumps(
            [
                {"email": "c@example.com", "smtp": {"host": "h"}},
                {"email": "A@example.com", "smtp": {"host": "h"}},
            ]
        )
    )
    result = mailpool("accounts", "import", str(dump), storage=url)
    assert result.code == 2
    assert "already uses 'A@example.com'" in result.err
    assert "nothing imported" in result.err
    listed = json.loads(ok("accounts", "list", "--json", storage=url).out)
    assert [account["email"] for account in listed] == ["a@example.com"]
    # A duplicate inside the file is refused the same way.
    dump.write_text(
        json.dumps(
            [
                {"email": "c@example.com", "smtp": {"host": "h"}},
                {"email": "C@example.com", "smtp": {"host": "h"}},
            ]
        )
    )
    assert mailpool("accounts", "import", str(dump), storage=url).code == 2
    assert len(json.loads(ok("accounts", "list", "--json", storage=url).out)) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON (line 1"),
        ('{"version": 2, "accounts": []}', "format version 2"),
        ('{"accounts": 3}', "holds no account list"),
        (
            '[{"email": "a@example.com", "smtp": {"host": "h"}, "colour": "red"}]',
            "colour",
        ),
        ('[{"email": "not an address", "smtp": {"host": "h"}}]', "account 1"),
        ('[["a@example.com"]]', "expected a JSON object"),
    ],
)
def test_import_refuses_a_bad_file_naming_the_problem(
    tmp_path: Path, content: str, message: str
) -> None:
    dump = tmp_path / "bad.json"
    dump.write_text(content)
    url = f"json://{tmp_path / 'accounts.json'}"
    result = mailpool("accounts", "import", str(dump), storage=url)
    assert result.code == 2
    assert message in result.err
    assert not (tmp_path / "accounts.json").exists()


def test_import_of_a_missing_file_is_an_error(tmp_path: Path) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    result = mailpool("accounts", "import", str(tmp_path / "nope.csv"), storage=url)
    assert result.code == 2 and "cannot read" in result.err and "nope.csv" in result.err


def test_import_reads_standard_input(tmp_path: Path) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    rows = "email,host\na@example.com,h\n"
    ok("accounts", "import", "-", storage=url, stdin=rows)
    assert show(url, "a@example.com")["smtp"]["host"] == "h"


def _bulk_csv(path: Path, count: int) -> None:
    lines = ["email,host,password,use_tls,allow_insecure_auth"]
    lines += [f"user{n}@example.com,h,{PASSWORD},false,true" for n in range(count)]
    path.write_text("\n".join(lines) + "\n")


def test_a_large_import_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    dump = tmp_path / "bulk.csv"
    _bulk_csv(dump, 250)
    url = f"sqlite:///{tmp_path / 'accounts.db'}"
    code, shown, out = in_terminal(
        ["accounts", "import", str(dump), "--storage", url], env=clean_env()
    )
    assert code == 0, shown
    assert "checking [" in shown and "250/250" in shown
    assert "storing 250 accounts..." in shown
    assert out == f"imported 250 accounts into {url}\n"


def test_without_a_terminal_there_is_no_progress_bar(tmp_path: Path) -> None:
    dump = tmp_path / "bulk.csv"
    _bulk_csv(dump, 250)
    url = f"json://{tmp_path / 'accounts.json'}"
    result = ok("accounts", "import", str(dump), storage=url)
    assert result.err == ""


def test_export_to_a_file_is_owner_only(json_url: str, tmp_path: Path) -> None:
    url = json_url
    add(url, "a@example.com", "--host", "h", password=PASSWORD)
    target = tmp_path / "backup.json"
    result = ok("accounts", "export", "--with-secrets", "-o", str(target), storage=url)
    assert result.out == f"exported 1 account to {target}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text())["accounts"][0]["smtp"]["password"] == PASSWORD
    summary = ok("accounts", "export", "-o", str(target), "--json", storage=url)
    assert json.loads(summary.out) == {"exported": 1, "file": str(target)}
    assert "password" not in target.read_text()


def test_an_export_is_a_valid_json_storage_file(json_url: str, tmp_path: Path) -> None:
    url = json_url
    add(url, "a@example.com", "--host", "h", "--tag", "t", password=PASSWORD)
    target = tmp_path / "copy.json"
    ok("accounts", "export", "--with-secrets", "-o", str(target), storage=url)
    copy = f"json://{target}"
    assert show(copy, "a@example.com")["secrets_set"] == ["smtp.password"]


def test_the_list_json_output_imports_too(json_url: str, tmp_path: Path) -> None:
    add(json_url, "a@example.com", "--host", "h", "--owner", "acme", password=PASSWORD)
    dump = tmp_path / "listed.json"
    dump.write_text(ok("accounts", "list", "--json", storage=json_url).out)
    target = f"json://{tmp_path / 'target.json'}"
    ok("accounts", "import", str(dump), storage=target)
    copy = show(target, "a@example.com")
    assert copy["owner"] == "acme" and copy["secrets_set"] == []  # no secret listed
