"""The ``mailpool`` command as a whole: version, help, the storage option and
environment variable, storages that do not exist, exit codes, one-line errors
without secrets, the demo. Every test runs the real command in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailpool import __version__
from test_cli_support import (
    DB_PASSWORD,
    POSTGRES,
    clean_env,
    empty_storage,
    mailpool,
    ok,
    postgres_tables,
)


def test_version_is_the_package_version() -> None:
    assert ok("--version").out.strip() == f"mailpool {__version__}"


def test_the_console_script_runs_the_same_command() -> None:
    script = Path(sys.executable).with_name("mailpool")
    if not script.exists():
        pytest.skip("the mailpool console script is not installed next to python")
    finished = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0
    assert finished.stdout.strip() == f"mailpool {__version__}"


def test_help_lists_every_command_and_the_exit_codes() -> None:
    out = ok("--help").out
    for command in (
        "accounts",
        "test-accounts",
        "reset-daily",
        "usage",
        "send",
        "demo",
    ):
        assert command in out
    assert "MAILPOOL_STORAGE" in out and "exit status" in out
    accounts = ok("accounts", "--help").out
    for action in ("add", "list", "show", "set-status", "remove", "import", "export"):
        assert action in accounts


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nonsense"],
        ["accounts"],
        ["accounts", "add"],
        ["accounts", "set-status", "x", "sleeping"],
        ["send", "--to", "a@example.com", "--subject", "s"],  # no body
        [
            "send",
            "--to",
            "a@example.com",
            "--subject",
            "s",
            "--body",
            "b",
            "--wait",
            "-1",
        ],
        ["accounts", "add", "a@example.com", "--password-env", "X", "--no-password"],
        ["accounts", "add", "a@example.com", "--password", "hunter2"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = mailpool(*args)
    assert result.code == 2
    assert result.err.startswith("mailpool: ") and "--help" in result.err
    assert "hunter2" not in result.err


def test_without_a_storage_the_error_names_the_option_and_the_variable() -> None:
    result = mailpool("accounts", "list")
    assert result.code == 2
    assert result.err.startswith("mailpool: no storage given")
    assert "--storage" in result.err and "MAILPOOL_STORAGE" in result.err


def test_the_storage_comes_from_the_environment(tmp_path: Path) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    env = {"MAILPOOL_STORAGE": url}
    ok("accounts", "add", "a@example.com", "--host", "h", "--no-password", env=env)
    assert json.loads(ok("accounts", "list", "--json", env=env).out)[0]["email"] == (
        "a@example.com"
    )
    # --storage wins over the variable, before or after the command name.
    other = f"json://{tmp_path / 'other.json'}"
    ok(
        "accounts",
        "add",
        "b@example.com",
        "--host",
        "h",
        "--no-password",
        "--storage",
        other,
        env=env,
    )
    listed = json.loads(
        ok("--storage", other, "accounts", "list", "--json", env=env).out
    )
    assert [a["email"] for a in listed] == ["b@example.com"]


# Every command that reads or changes existing accounts, with valid arguments.
READING_COMMANDS = [
    ["accounts", "list"],
    ["accounts", "show", "a@example.com"],
    ["accounts", "set-status", "a@example.com", "active"],
    ["accounts", "remove", "a@example.com"],
    ["accounts", "export"],
    ["test-accounts"],
    ["reset-daily"],
    ["usage"],
    ["send", "--to", "x@example.org", "--subject", "s", "--body", "b"],
]


@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("kind", ["json", "sqlite"])
def test_a_missing_storage_file_is_an_error_and_nothing_is_created(
    kind: str, command: list[str], tmp_path: Path
) -> None:
    with empty_storage(kind, tmp_path) as url:
        result = mailpool(*command, "--json", storage=url)
    assert result.code == 2
    assert result.out == ""
    name = "accounts.json" if kind == "json" else "accounts.db"
    assert "does not exist" in result.err and str(tmp_path / name) in result.err
    assert list(tmp_path.iterdir()) == []  # no file, no lock file, no journal


@pytest.mark.parametrize("command", READING_COMMANDS[:3], ids=" ".join)
@pytest.mark.parametrize("kind", [POSTGRES])
def test_a_database_without_the_tables_is_an_error_and_stays_empty(
    kind: str, command: list[str], tmp_path: Path
) -> None:
    with empty_storage(kind, tmp_path) as url:
        result = mailpool(*command, storage=url)
        assert postgres_tables(url) == []
    assert result.code == 2
    assert "does not exist (no table mailpool_accounts" in result.err


def test_an_empty_sqlite_file_is_not_given_tables(tmp_path: Path) -> None:
    database = tmp_path / "other.db"
    database.touch()
    result = mailpool("usage", storage=f"sqlite:///{database}")
    assert result.code == 2 and "no table mailpool_accounts" in result.err
    assert database.stat().st_size == 0


def test_relative_paths_are_relative_to_the_current_directory(tmp_path: Path) -> None:
    result = mailpool(
        "accounts", "list", storage="json://data/accounts.json", cwd=tmp_path
    )
    assert result.code == 2 and "data/accounts.json" in result.err
    (tmp_path / "data").mkdir()
    ok(
        "accounts",
        "add",
        "a@example.com",
        "--host",
        "h",
        "--no-password",
        storage="json://data/accounts.json",
        cwd=tmp_path,
    )
    assert (tmp_path / "data" / "accounts.json").exists()
    ok(
        "accounts",
        "show",
        "a@example.com",
        storage="json://data/accounts.json",
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql+psycopg://mailpool:{DB_PASSWORD}@127.0.0.1:1/mailpool",
            "postgresql+psycopg://mailpool:***@127.0.0.1:1/mailpool",
        ),
        (f"ftp://mailpool:{DB_PASSWORD}@host/x", "unknown storage URL scheme"),
        (f"mailpool:{DB_PASSWORD}@host", "'mailpool:***@host' is not a storage URL"),
        (
            f"postgresql+psycopg://127.0.0.1:1/db?password={DB_PASSWORD}",
            "127.0.0.1:1/db",
        ),
    ],
)
@pytest.mark.parametrize(
    "command",
    [["accounts", "list"], ["accounts", "add", "a@example.com", "--no-password"]],
    ids=" ".join,
)
def test_a_storage_password_is_never_shown(
    url: str, shown: str, command: list[str]
) -> None:
    # mailpool() fails the test if DB_PASSWORD appears anywhere.
    result = (
        mailpool(*command, "--host", "h", storage=url)
        if "add" in command
        else (mailpool(*command, storage=url))
    )
    assert result.code == 2
    assert shown in result.err


def test_an_unknown_storage_scheme_is_a_clear_error() -> None:
    result = mailpool("usage", storage="ftp://user:hunter2@host/x")
    assert result.code == 2
    assert "unknown storage URL scheme 'ftp'" in result.err
    assert "hunter2" not in result.err


def test_demo_sends_until_the_limits_run_out_in_a_real_process() -> None:
    result = ok("demo", "--messages", "11")
    assert result.out.count("sent via") == 9 + 1  # 9 today, 1 the next day
    assert result.out.count("not sent: all 3 active accounts") == 2
    assert "One day later the counts have reset" in result.out
    assert "The server received 10 messages" in result.out
    assert result.err == ""


def test_demo_ignores_the_storage_variable(tmp_path: Path) -> None:
    env = clean_env(MAILPOOL_STORAGE=f"json://{tmp_path / 'x.json'}")
    finished = subprocess.run(
        [sys.executable, "-m", "mailpool", "demo", "--messages", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    assert "sent via" in finished.stdout
    assert list(tmp_path.iterdir()) == []
