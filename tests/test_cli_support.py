"""Helpers of the command's tests (run ``python -m mailpool`` in a real
process against real storages), and tests of the URL redaction they rely on.

Every run is checked for secrets: no password, token or database password
used by these tests may appear on stdout or stderr, unless the test asks for
it (``accounts export --with-secrets``).
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailpool.cli._storage import redact, url_secrets
from smtpserver import USERS, SMTPTestServer

POSTGRES_URL = os.environ.get("MAILPOOL_TEST_POSTGRES_URL")
NEEDS_POSTGRES = pytest.mark.skipif(
    not POSTGRES_URL, reason="MAILPOOL_TEST_POSTGRES_URL is not set"
)
POSTGRES = pytest.param("postgresql", marks=NEEDS_POSTGRES)
STORAGE_KINDS = ["json", "sqlite", POSTGRES]
"""The storages every command is tested on."""

PASSWORD = "S3cret-CLI-pa55!"
"""A recognizable password that must never be printed."""
WRONG_PASSWORD = "Wr0ng-Secret-XyZ"
DB_PASSWORD = "DbPa55-Hidden"
SECRETS = (PASSWORD, WRONG_PASSWORD, DB_PASSWORD, *USERS.values())


@dataclass(frozen=True)
class Result:
    """A finished ``mailpool`` process."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def check_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret {secret!r} printed: {text!r}"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without MAILPOOL_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPOOL_")}
    env.update(extra)
    return env


def mailpool(
    *args: str,
    storage: str | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    secrets_allowed: bool = False,
    cwd: Path | None = None,
) -> Result:
    """Run ``python -m mailpool [--storage URL] ARGS`` and check that it printed
    no secret and no traceback."""
    command = [sys.executable, "-m", "mailpool"]
    if storage is not None:
        command += ["--storage", storage]
    finished = subprocess.run(
        [*command, *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=90,
        env=clean_env(**(env or {})),
        cwd=cwd,
    )
    result = Result(finished.returncode, finished.stdout, finished.stderr)
    assert "Traceback" not in result.err, result.err
    check_no_secret(result.err)
    if not secrets_allowed:
        check_no_secret(result.out)
    if result.code != 0 and result.err:
        assert len(result.err.splitlines()) == 1, result.err
        assert result.err.startswith("mailpool: "), result.err
    return result


def ok(*args: str, **options: Any) -> Result:
    """:func:`mailpool` that must exit 0."""
    result = mailpool(*args, **options)
    assert result.code == 0, result
    return result


_ON_TERMINAL = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'mailpool', *sys.argv[1:]])\n"
)


def in_terminal(
    args: Sequence[str], *, env: dict[str, str], answer: str | None = None
) -> tuple[int, str, str]:
    """Run ``python -m mailpool ARGS`` with stdin and stderr on a terminal
    (a pseudo-terminal made the process's controlling terminal, so
    ``getpass`` prompts on it); stdout stays a pipe. Types ``answer`` and a
    newline once the terminal shows a prompt (output ending in ``":"``).

    :returns: the exit status, what the terminal showed, and stdout.
    """
    terminal, child_side = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", _ON_TERMINAL, *args],
        stdin=child_side,
        stdout=subprocess.PIPE,
        stderr=child_side,
        env=env,
        start_new_session=True,
    )
    os.close(child_side)
    assert process.stdout is not None
    output = process.stdout.fileno()
    shown, out = b"", b""
    answered = answer is None
    open_fds = {terminal, output}
    try:
        while open_fds:
            ready, _, _ = select.select(list(open_fds), [], [], 60)
            assert ready, f"no output for 60 s: {shown!r}"
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's last user is gone
                    chunk = b""
                if not chunk:
                    open_fds.discard(fd)
                elif fd == terminal:
                    shown += chunk
                    if not answered and shown.rstrip(b" ").endswith(b":"):
                        assert answer is not None
                        os.write(terminal, answer.encode() + b"\n")
                        answered = True
                else:
                    out += chunk
        code = process.wait(timeout=60)
    finally:
        os.close(terminal)
        process.stdout.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    text, stdout = shown.decode(errors="replace"), out.decode()
    check_no_secret(text)
    check_no_secret(stdout)
    return code, text, stdout


@contextlib.contextmanager
def empty_storage(kind: str, folder: Path) -> Iterator[str]:
    """The URL of a storage of ``kind`` that does not exist yet: a JSON or
    SQLite file not created, or a new PostgreSQL schema without tables."""
    if kind == "json":
        yield f"json://{folder / 'accounts.json'}"
        return
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'accounts.db'}"
        return
    assert POSTGRES_URL is not None
    import sqlalchemy as sa

    schema = f"mailpool_cli_{uuid.uuid4().hex[:12]}"
    url = sa.make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-c search_path={schema}"}
    )
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def postgres_tables(url: str) -> list[str]:
    """The tables in the schema a test URL points at."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(
                conn.execute(
                    sa.text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = current_schema()"
                    )
                ).scalars()
            )
    finally:
        engine.dispose()


def add_relay_account(
    storage: str,
    server: SMTPTestServer,
    email: str,
    password: str | None = None,
    *options: str,
) -> str:
    """``accounts add`` an account on the plain test relay; returns its id."""
    args = [
        "accounts",
        "add",
        email,
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--plain",
        "--min-wait-time",
        "0",
        *options,
        "--json",
    ]
    if password is None:
        args.append("--no-password")
    else:
        args += ["--allow-insecure-auth", "--password-stdin"]
    result = ok(*args, storage=storage, stdin=password)
    import json

    account_id = json.loads(result.out)["id"]
    assert isinstance(account_id, str)
    return account_id


# ----------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("json:///var/lib/a@b:c.json", "json:///var/lib/a@b:c.json"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        (
            f"postgresql+psycopg://app:{DB_PASSWORD}@db:5432/app",
            "postgresql+psycopg://app:***@db:5432/app",
        ),
        ("postgresql://db:5432/app", "postgresql://db:5432/app"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("mysql://u:p@ss@host/db", "mysql://u:***@host/db"),
        ("postgresql://u:a/b?c@host/db", "postgresql://u:***@host/db"),
        (
            f"postgresql://host/db?user=app&password={DB_PASSWORD}&x=1",
            "postgresql://host/db?user=app&password=***&x=1",
        ),
        ("ftp://user:hunter2@host/x", "ftp://user:***@host/x"),
        ("user:hunter2@host", "user:***@host"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    for secret in url_secrets(url):
        assert secret not in redact(url)


def test_url_secrets_include_the_decoded_password() -> None:
    assert url_secrets("postgresql://u:p%40ss@h/db") == {"p%40ss", "p@ss"}
    assert url_secrets("sqlite:///x.db") == set()
