"""``mailpool accounts add|list|show|set-status|remove|import|export``."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import tempfile
from pathlib import Path
from typing import Any

from mailpool.cli._context import Context
from mailpool.cli._errors import EXIT_OK, CommandError
from mailpool.cli._output import cell, count
from mailpool.cli._records import (
    account_record,
    build_account,
    csv_export,
    json_export,
    read_records,
    secret_fields,
)
from mailpool.errors import ConfigurationError
from mailpool.models import Account, AccountStatus, SMTPSettings
from mailpool.providers import ConnectionType

__all__ = [
    "add",
    "export",
    "import_",
    "list_",
    "remove",
    "set_status",
    "show",
]

IMPORT_PROGRESS_MIN = 200
"""Accounts in an import file from which a progress bar is drawn (on a terminal)."""

_PORTS = {"starttls": 587, "ssl": 465, "plain": 25}
_SERVER_OPTIONS = (
    ("host", "--host"),
    ("port", "--port"),
    ("security", "--starttls/--ssl/--plain"),
    ("allow_insecure_auth", "--allow-insecure-auth"),
    ("connection_type", "--connection-type"),
)


def _described(account: Account) -> dict[str, Any]:
    """The account for ``list``/``show --json``: no secret, but which are set."""
    return {**account_record(account), "secrets_set": secret_fields(account)}


# ---------------------------------------------------------------------- add


def _password(ctx: Context, args: argparse.Namespace) -> str | None:
    """The password from --password-env, --password-stdin or a prompt."""
    if args.no_password:
        return None
    if args.password_env is not None:
        value = ctx.environ.get(args.password_env)
        if not value:
            raise CommandError(
                f"--password-env: the environment variable {args.password_env} "
                "is not set or empty"
            )
    elif args.password_stdin:
        value = ctx.stdin.read().rstrip("\r\n")
        if not value:
            raise CommandError("--password-stdin: standard input holds no password")
    elif ctx.stdin.isatty():
        value = getpass.getpass(f"SMTP password for {args.email} (empty for none): ")
        if not value:
            return None
    else:
        raise CommandError(
            "no password given and no terminal to ask for one: pass "
            "--password-stdin, --password-env VAR or --no-password"
        )
    ctx.out.secrets.add(value)
    return value


def _account_from_args(args: argparse.Namespace, password: str | None) -> Account:
    fields: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "id",
            "sender_name",
            "owner",
            "status",
            "daily_limit",
            "min_wait_time",
            "max_in_flight",
            "timezone",
        )
        if getattr(args, name) is not None
    }
    if args.tag:
        fields["tags"] = frozenset(args.tag)
    if args.provider is not None:
        given = [flag for name, flag in _SERVER_OPTIONS if getattr(args, name)]
        if given:
            raise CommandError(
                f"--provider {args.provider} sets the server: leave out "
                f"{', '.join(given)}"
            )
        return Account.for_provider(
            args.provider,
            email=args.email,
            password=password,
            username=args.username,
            **fields,
        )
    if args.host is None:
        raise CommandError(
            "pass --host HOST (the SMTP server) or --provider gmail|outlook|yahoo|zoho"
        )
    security = args.security or "starttls"
    smtp = SMTPSettings(
        host=args.host,
        port=args.port if args.port is not None else _PORTS[security],
        use_tls=security == "starttls",
        use_ssl=security == "ssl",
        username=args.username,
        password=password,
        allow_insecure_auth=args.allow_insecure_auth,
    )
    if args.connection_type is not None:
        fields["connection_type"] = ConnectionType(args.connection_type)
    return Account(email=args.email, smtp=smtp, **fields)


def add(ctx: Context, args: argparse.Namespace) -> int:
    """Store a new account (creating the storage if needed)."""
    ctx.require_storage_url()  # before asking for a password
    account = _account_from_args(args, _password(ctx, args))
    stored = ctx.storage(create=True).add(account)
    if ctx.out.as_json:
        ctx.out.json(_described(stored))
    else:
        ctx.out.line(f"added {stored.email} (id {stored.id}) to {ctx.shown}")
    return EXIT_OK


# --------------------------------------------------------------- list, show


def list_(ctx: Context, args: argparse.Namespace) -> int:
    """A table of the accounts (of an owner, with a tag, in a status)."""
    accounts = ctx.storage().accounts(
        owner=args.owner,
        tag=args.tag,
        status=None if args.status is None else AccountStatus(args.status),
    )
    if ctx.out.as_json:
        ctx.out.json([_described(account) for account in accounts])
        return EXIT_OK
    if not accounts:
        ctx.out.line("no accounts")
        return EXIT_OK
    ctx.out.table(
        ("ID", "EMAIL", "OWNER", "TAGS", "STATUS", "LIMIT", "SERVER"),
        (
            (
                account.id,
                account.email,
                cell(account.owner),
                cell(account.tags),
                account.status.value,
                str(account.daily_limit),
                f"{account.smtp.host}:{account.smtp.port}",
            )
            for account in accounts
        ),
    )
    return EXIT_OK


def _flat(record: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for name, value in record.items():
        if isinstance(value, dict):
            rows.extend(_flat(value, f"{prefix}{name}."))
        else:
            rows.append((prefix + name, value))
    return rows


def show(ctx: Context, args: argparse.Namespace) -> int:
    """Every field of one account; secrets only as "set"."""
    account = ctx.find(args.account)
    if ctx.out.as_json:
        ctx.out.json(_described(account))
        return EXIT_OK
    rows = _flat(account_record(account, mask="(set)"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        ctx.out.line(f"{name + ':':<{width + 1}} {cell(value)}")
    return EXIT_OK


# ------------------------------------------------------ set-status, remove


def set_status(ctx: Context, args: argparse.Namespace) -> int:
    """Change an account's status; ``active`` clears the last error."""
    status = AccountStatus(args.status)
    if status is AccountStatus.ACTIVE and args.reason is not None:
        raise CommandError("--reason is for inactive, error or pending accounts")
    account = ctx.find(args.account)
    updated = ctx.storage().update(
        account.replace(status=status, status_reason=args.reason)
    )
    if ctx.out.as_json:
        ctx.out.json(
            {
                "id": updated.id,
                "email": updated.email,
                "previous_status": account.status.value,
                "status": updated.status.value,
                "status_reason": updated.status_reason,
            }
        )
    else:
        ctx.out.line(
            f"{updated.email}: {account.status.value} -> {updated.status.value}"
        )
    return EXIT_OK


def remove(ctx: Context, args: argparse.Namespace) -> int:
    """Delete an account."""
    account = ctx.find(args.account)
    ctx.storage().remove(account.id)
    if ctx.out.as_json:
        ctx.out.json({"removed": {"id": account.id, "email": account.email}})
    else:
        ctx.out.line(f"removed {account.email} (id {account.id})")
    return EXIT_OK


# ------------------------------------------------------------ import/export


def _import_kind(args: argparse.Namespace, text: str) -> str:
    if args.format is not None:
        return str(args.format)
    suffix = Path(args.file).suffix.lower()
    if suffix in (".json", ".csv"):
        return suffix[1:]
    return "json" if text.lstrip()[:1] in ("{", "[") else "csv"


def _read_text(ctx: Context, name: str) -> str:
    if name == "-":
        return ctx.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CommandError(f"cannot read {name}: {reason}") from None


def import_(ctx: Context, args: argparse.Namespace) -> int:
    """Add every account of a JSON or CSV file, all or none."""
    source = "standard input" if args.file == "-" else args.file
    text = _read_text(ctx, args.file)
    records = read_records(text, kind=_import_kind(args, text), source=source)
    progress = ctx.out.progress("checking", len(records), minimum=IMPORT_PROGRESS_MIN)
    accounts: list[Account] = []
    for where, record in records:
        try:
            accounts.append(build_account(record))
        except (ConfigurationError, TypeError) as exc:
            progress.finish()
            label = record.get("email") if isinstance(record, dict) else None
            about = f" ({label})" if isinstance(label, str) else ""
            raise CommandError(
                f"{source}, {where}{about}: {exc}; nothing imported"
            ) from None
        progress.advance()
    progress.finish()
    storage = ctx.storage(create=True)
    if progress.enabled:
        ctx.out.stderr.write(f"storing {count(len(accounts), 'account')}...\n")
    try:
        stored = storage.add_many(accounts)
    except ConfigurationError as exc:
        raise CommandError(f"{exc}; nothing imported") from None
    if ctx.out.as_json:
        ctx.out.json({"imported": stored})
    else:
        ctx.out.line(f"imported {count(stored, 'account')} into {ctx.shown}")
    return EXIT_OK


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, owner-only (0600)."""
    folder = path.parent if str(path.parent) else Path(".")
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def export(ctx: Context, args: argparse.Namespace) -> int:
    """Print (or write) the accounts in the format ``accounts import`` reads."""
    accounts = ctx.storage().accounts(
        owner=args.owner,
        tag=args.tag,
        status=None if args.status is None else AccountStatus(args.status),
    )
    secrets = bool(args.with_secrets)
    render = csv_export if args.format == "csv" else json_export
    text = render(accounts, secrets=secrets)
    if args.output is None or args.output == "-":
        ctx.out.stdout.write(text)
        return EXIT_OK
    target = Path(args.output)
    try:
        _write_private(target, text)
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror}") from None
    if ctx.out.as_json:
        ctx.out.json({"exported": len(accounts), "file": str(target)})
    else:
        ctx.out.line(
            f"exported {count(len(accounts), 'account')} to {target}"
            + ("" if secrets else " (without secrets)")
        )
    return EXIT_OK
