"""``mailpool test-accounts``, ``revive``, ``reset-daily``, ``usage``,
``explain``, ``send`` and ``demo``."""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mailpool._demo import run_demo
from mailpool.cli._context import Context
from mailpool.cli._errors import EXIT_FAILED, EXIT_OK, CommandError
from mailpool.cli._output import cell, count, duration, one_line
from mailpool.errors import AccountNotFound
from mailpool.health import HealthPolicy
from mailpool.models import Account, AccountStatus
from mailpool.pool import AccountPool
from mailpool.transport import SMTPTransport

__all__ = [
    "demo",
    "explain",
    "reset_daily",
    "revive",
    "send",
    "test_accounts",
    "usage",
]

TEST_PROGRESS_MIN = 10
"""Accounts from which ``test-accounts`` draws a progress bar (on a terminal)."""
TEST_THREADS = 8
"""Connection tests run at once."""
DEFAULT_HEALTH = HealthPolicy()


def _scope(args: argparse.Namespace) -> str:
    parts = [
        f"{name} {value!r}"
        for name in ("owner", "tag")
        if (value := getattr(args, name, None)) is not None
    ]
    return f" ({', '.join(parts)})" if parts else ""


# ------------------------------------------------------------ test-accounts


def _chosen(ctx: Context, pool: AccountPool, args: argparse.Namespace) -> list[Account]:
    """The accounts named by --account-id/--email (any status), else every
    active account in scope; each once, ordered by email."""
    keys = [*(args.account_id or ()), *(args.email or ())]
    if not keys:
        return ctx.storage().accounts(
            owner=args.owner, tag=args.tag, status=AccountStatus.ACTIVE
        )
    found: dict[str, Account] = {}
    for key in keys:
        account = ctx.find(key)
        if not pool.scope.matches(account):
            raise CommandError(f"{account.email} is not in the scope{_scope(args)}")
        found[account.id] = account
    return sorted(found.values(), key=lambda a: (a.email.casefold(), a.id))


def _test_one(
    pool: AccountPool, account: Account, args: argparse.Namespace
) -> dict[str, Any]:
    try:
        result = pool.test_connection(
            account.id,
            deep=bool(getattr(args, "deep", False) or getattr(args, "probe", None)),
            probe_address=getattr(args, "probe", None),
        )
    except AccountNotFound:
        return {
            "account_id": account.id,
            "account_email": account.email,
            "success": False,
            "message": "The account was removed during the test.",
        }
    return {
        "account_id": result.account_id,
        "account_email": result.account_email,
        "success": result.success,
        "message": one_line(result.message),
    }


def test_accounts(ctx: Context, args: argparse.Namespace) -> int:
    """Connect and log in with each account, without sending or changing it."""
    transport = SMTPTransport(timeout=args.timeout, reuse_connections=False)
    storage = ctx.storage()
    with AccountPool(
        storage, owner=args.owner, tag=args.tag, transport=transport
    ) as pool:
        accounts = _chosen(ctx, pool, args)
        if not accounts:
            if ctx.out.as_json:
                ctx.out.json([])
            ctx.out.error(f"no active account to test in {ctx.shown}{_scope(args)}")
            return EXIT_FAILED
        progress = ctx.out.progress("testing", len(accounts), minimum=TEST_PROGRESS_MIN)
        results: dict[str, dict[str, Any]] = {}
        with ThreadPoolExecutor(max_workers=min(TEST_THREADS, len(accounts))) as run:
            futures = {run.submit(_test_one, pool, a, args): a.id for a in accounts}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                progress.advance()
        progress.finish()
    ordered = [results[account.id] for account in accounts]
    failed = sum(not result["success"] for result in ordered)
    if ctx.out.as_json:
        ctx.out.json(ordered)
    else:
        _print_results(ctx, ordered, "success", ("ok", "FAIL"))
    return EXIT_FAILED if failed else EXIT_OK


def _print_results(
    ctx: Context, rows: list[dict[str, Any]], passed: str, marks: tuple[str, str]
) -> None:
    """One line per row: its mark (``marks[0]`` when ``row[passed]``), its
    email and its message, aligned."""
    mark_width = max(len(mark) for mark in marks)
    width = max(len(row["account_email"]) for row in rows)
    for row in rows:
        mark = marks[0] if row[passed] else marks[1]
        email = row["account_email"]
        ctx.out.line(f"{mark:<{mark_width}}  {email:<{width}}  {row['message']}")


# ------------------------------------------------------------------- revive


def revive(ctx: Context, args: argparse.Namespace) -> int:
    """Probe the accounts in error that are due, reactivate those that pass."""
    transport = SMTPTransport(timeout=args.timeout, reuse_connections=False)
    policy = HealthPolicy(
        revive_after=args.after, revive_max=max(args.after, DEFAULT_HEALTH.revive_max)
    )
    with AccountPool(
        ctx.storage(),
        owner=args.owner,
        tag=args.tag,
        transport=transport,
        health=policy,
    ) as pool:
        results = pool.revive(deep=not args.shallow, probe_address=args.probe)
    rows: list[dict[str, Any]] = [
        {
            "account_id": result.account_id,
            "account_email": result.account_email,
            "revived": result.success,
            "message": one_line(result.message),
        }
        for result in results
    ]
    if ctx.out.as_json:
        ctx.out.json(rows)
    elif not rows:
        ctx.out.line(f"no account in error is due for a probe{_scope(args)}")
    else:
        _print_results(ctx, rows, "revived", ("revived", "FAIL"))
    return EXIT_OK


# -------------------------------------------------------------- reset-daily


def reset_daily(ctx: Context, args: argparse.Namespace) -> int:
    """Set today's count of every account (of an owner) to 0."""
    reset = ctx.storage().reset_daily_counts(owner=args.owner)
    if ctx.out.as_json:
        ctx.out.json({"reset": reset, "owner": args.owner})
    else:
        ctx.out.line(
            f"reset the daily count of {count(reset, 'account')}{_scope(args)}"
        )
    return EXIT_OK


# -------------------------------------------------------------------- usage


def next_send_in(account: Account, remaining: int, now: datetime) -> float | None:
    """Seconds until ``account`` may send again (0: now); None when it cannot
    (not active, or a daily limit of 0). At its limit: the next midnight in
    the account's time zone."""
    if account.status is not AccountStatus.ACTIVE or account.daily_limit == 0:
        return None
    if remaining == 0:
        return float(max(account.seconds_to_reset(now), account.pause_left(now)))
    return max(
        account.wait_left(now), account.busy_left(now), account.pause_left(now), 0.0
    )


def usage(ctx: Context, args: argparse.Namespace) -> int:
    """Today's sends, what is left, and when each account may send next."""
    storage = ctx.storage()
    with AccountPool(storage, owner=args.owner, tag=args.tag) as pool:
        now = pool.now()
        rows = pool.usage()
    report: list[dict[str, Any]] = []
    for account, sent, remaining in rows:
        wait = next_send_in(account, remaining, now)
        at = None if wait is None else now + timedelta(seconds=wait)
        report.append(
            {
                "id": account.id,
                "email": account.email,
                "owner": account.owner,
                "status": account.status.value,
                "sent_today": sent,
                "daily_limit": account.daily_limit,
                "remaining": remaining,
                "in_flight": 0 if account.leases_expired(now) else account.in_flight,
                "next_send_in": None if wait is None else math.ceil(wait * 10) / 10,
                "next_send_at": None if at is None else at.isoformat(),
                "timezone": account.timezone,
                "last_error": account.last_error or account.status_reason,
                "last_error_at": None
                if account.last_error_at is None
                else account.last_error_at.isoformat(),
            }
        )
    if ctx.out.as_json:
        ctx.out.json(report)
        return EXIT_OK
    if not report:
        ctx.out.line("no accounts")
        return EXIT_OK
    ctx.out.table(
        (
            "EMAIL",
            "STATUS",
            "SENT",
            "LIMIT",
            "LEFT",
            "NEXT SEND",
            "LAST ERROR",
            "ERROR AT",
        ),
        (
            (
                row["email"],
                row["status"],
                str(row["sent_today"]),
                str(row["daily_limit"]),
                str(row["remaining"]),
                _when(row["next_send_in"]),
                cell(row["last_error"]),
                cell(row["last_error_at"]),
            )
            for row in report
        ),
    )
    return EXIT_OK


# ------------------------------------------------------------------ explain


def explain(ctx: Context, args: argparse.Namespace) -> int:
    """Whether each account can send now, and if not why and when."""
    with AccountPool(ctx.storage(), owner=args.owner, tag=args.tag) as pool:
        rows = pool.explain()
    if ctx.out.as_json:
        ctx.out.json([row.model_dump(mode="json") for row in rows])
        return EXIT_OK
    if not rows:
        ctx.out.line("no accounts")
        return EXIT_OK
    ctx.out.table(
        ("EMAIL", "ELIGIBLE", "STATE", "NEXT SEND", "WHY"),
        (
            (
                row.account_email,
                cell(row.eligible),
                row.state,
                "-" if row.next_send_at is None else row.next_send_at.isoformat(),
                cell(row.reason),
            )
            for row in rows
        ),
    )
    return EXIT_OK


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return "now" if seconds <= 0 else f"in {duration(seconds)}"


# --------------------------------------------------------------------- send


def _read(ctx: Context, name: str, what: str) -> str:
    if name == "-":
        return ctx.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CommandError(f"cannot read the {what} {name}: {reason}") from None


def send(ctx: Context, args: argparse.Namespace) -> int:
    """Send one message through an eligible account of the pool."""
    if args.body_file == "-" and args.html_file == "-":
        raise CommandError("only one of --body-file and --html-file can be '-'")
    body = args.body if args.body is not None else _read(ctx, args.body_file, "body")
    html = None if args.html_file is None else _read(ctx, args.html_file, "HTML body")
    storage = ctx.storage()
    with AccountPool(storage, owner=args.owner, tag=args.tag) as pool:
        result = pool.send_mail(
            subject=args.subject,
            body=body,
            to=args.to,
            html=html,
            cc=args.cc or (),
            bcc=args.bcc or (),
            reply_to=args.reply_to,
            wait=args.wait,
        )
    if ctx.out.as_json:
        ctx.out.json(result.model_dump(mode="json"))
        return EXIT_OK
    attempts = "1 attempt" if result.attempts == 1 else f"{result.attempts} attempts"
    ctx.out.line(f"sent {result.message_id} via {result.account_email} ({attempts})")
    if result.refused_recipients:
        ctx.out.line(f"refused: {', '.join(result.refused_recipients)}")
    return EXIT_OK


# --------------------------------------------------------------------- demo


def demo(ctx: Context, args: argparse.Namespace) -> int:
    """Run the demo on a local SMTP server it starts."""
    if args.messages < 0:
        raise CommandError("--messages must be 0 or more")
    return run_demo(args.messages, out=ctx.out.line)
