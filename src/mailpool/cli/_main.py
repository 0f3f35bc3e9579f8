"""The parser and :func:`main`: exit codes and one-line errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn, TextIO

from mailpool import __version__
from mailpool.cli import _accounts, _commands
from mailpool.cli._context import Context
from mailpool.cli._errors import EXIT_FAILED, EXIT_USAGE, CommandError
from mailpool.cli._output import one_line
from mailpool.cli._storage import STORAGE_ENV
from mailpool.errors import MailpoolError, NoAccountAvailable, SendError
from mailpool.models import AccountStatus
from mailpool.providers import PROVIDERS, ConnectionType

__all__ = ["build_parser", "main"]

Handler = Callable[[Context, argparse.Namespace], int]

_EPILOG = f"""\
The storage is --storage URL, or the {STORAGE_ENV} environment variable:
  json:///var/lib/mailpool/accounts.json   sqlite:////var/lib/mailpool.db
  postgresql+psycopg://user:password@host/db

exit status: 0 ok, 1 a connection test or a send failed, 2 usage or
configuration error (errors are one line on stderr)."""

_STATUSES = [status.value for status in AccountStatus]


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, like every other error, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"mailpool: {message} (see '{self.prog} --help')\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds: {text!r}")
    return value


def _common(*, storage: bool, json: bool) -> _Parser:
    """Options accepted before or after the command name."""
    common = _Parser(add_help=False)
    if storage:
        common.add_argument(
            "--storage",
            metavar="URL",
            default=argparse.SUPPRESS,
            help=f"the storage (default: ${STORAGE_ENV})",
        )
    if json:
        common.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print the result as JSON",
        )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log what mailpool does (on stderr)",
    )
    return common


def _scope(parser: argparse.ArgumentParser, *, status: bool = False) -> None:
    parser.add_argument("--owner", help="only this owner's accounts")
    parser.add_argument("--tag", help="only accounts with this tag")
    if status:
        parser.add_argument(
            "--status", choices=_STATUSES, help="only accounts in this status"
        )


def _command(
    commands: argparse._SubParsersAction[_Parser],
    name: str,
    handler: Handler,
    help_text: str,
    *,
    storage: bool = True,
    json: bool = True,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        parents=[_common(storage=storage, json=json)],
    )
    parser.set_defaults(handler=handler)
    return parser


def _add_account_options(add: argparse.ArgumentParser) -> None:
    add.add_argument("email", metavar="EMAIL", help="the sender address")
    add.add_argument("--id", help="the account id (default: a new random one)")
    add.add_argument("--sender-name", metavar="NAME", help="the name shown in From")
    add.add_argument(
        "--owner", metavar="OWNER", help="the tenant or company it belongs to"
    )
    add.add_argument(
        "--tag",
        action="append",
        metavar="TAG",
        help="a tag, e.g. a campaign (repeat for more)",
    )
    add.add_argument(
        "--status", choices=_STATUSES, help="the initial status (default: active)"
    )
    add.add_argument("--daily-limit", type=int, metavar="N", help="default: 30")
    add.add_argument(
        "--min-wait-time",
        type=_positive_float,
        metavar="SECONDS",
        help="seconds between two deliveries (default: 1)",
    )
    add.add_argument(
        "--timezone",
        metavar="ZONE",
        help="IANA zone whose midnight resets its daily count (default: UTC)",
    )
    add.add_argument(
        "--max-in-flight",
        type=int,
        metavar="N",
        help="sends of this account at once (default: 1)",
    )
    server = add.add_argument_group("server (or --provider)")
    server.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        help="use this provider's server settings",
    )
    server.add_argument("--host", metavar="HOST", help="the SMTP server")
    server.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help="default: 587 (STARTTLS), 465 (SSL), 25 (plain)",
    )
    security = server.add_mutually_exclusive_group()
    for flag, value, text in (
        ("--starttls", "starttls", "upgrade with STARTTLS (the default)"),
        ("--ssl", "ssl", "implicit TLS"),
        ("--plain", "plain", "no encryption (a trusted local relay)"),
    ):
        security.add_argument(
            flag, dest="security", action="store_const", const=value, help=text
        )
    server.add_argument(
        "--allow-insecure-auth",
        action="store_true",
        help="allow a password over --plain",
    )
    server.add_argument(
        "--connection-type",
        choices=[kind.value for kind in ConnectionType],
        help="default: imap/smtp (a provider's with --provider)",
    )
    login = add.add_argument_group("login (the password is never an argument)")
    login.add_argument(
        "--username", metavar="LOGIN", help="the SMTP login (default: the email)"
    )
    source = login.add_mutually_exclusive_group()
    source.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input",
    )
    source.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from this environment variable",
    )
    source.add_argument(
        "--no-password",
        action="store_true",
        help="no password (a relay that needs no login)",
    )


def _accounts_parser(
    commands: argparse._SubParsersAction[_Parser],
) -> None:
    group = commands.add_parser(
        "accounts",
        help="add, list, show, change, remove, import and export accounts",
        description="Manage the accounts of the storage.",
        parents=[_common(storage=True, json=True)],
    )
    accounts = group.add_subparsers(dest="accounts_command", metavar="ACTION")
    accounts.required = True

    add = _command(
        accounts,
        "add",
        _accounts.add,
        "store a new account (creates the storage if needed); without "
        "--password-stdin, --password-env or --no-password, asks for the password",
    )
    _add_account_options(add)

    listing = _command(accounts, "list", _accounts.list_, "a table of the accounts")
    _scope(listing, status=True)

    show = _command(accounts, "show", _accounts.show, "every field of one account")
    show.add_argument("account", metavar="ID_OR_EMAIL")

    status = _command(
        accounts,
        "set-status",
        _accounts.set_status,
        "change an account's status; 'active' reactivates an account in error "
        "and clears its last error",
    )
    status.add_argument("account", metavar="ID_OR_EMAIL")
    status.add_argument("status", choices=_STATUSES)
    status.add_argument("--reason", help="why (not with 'active')")

    remove = _command(accounts, "remove", _accounts.remove, "delete an account")
    remove.add_argument("account", metavar="ID_OR_EMAIL")

    imports = _command(
        accounts,
        "import",
        _accounts.import_,
        "add the accounts of a JSON or CSV file, all or none (creates the "
        "storage if needed)",
    )
    imports.add_argument("file", metavar="FILE", help="the file, or - for stdin")
    imports.add_argument(
        "--format",
        choices=["json", "csv"],
        help="default: from the file name (.json, .csv), else from its content",
    )

    exports = _command(
        accounts,
        "export",
        _accounts.export,
        "print the accounts as JSON (or CSV) that 'accounts import' reads back",
    )
    _scope(exports, status=True)
    exports.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (mode 0600)"
    )
    exports.add_argument(
        "--format", choices=["json", "csv"], default="json", help="default: json"
    )
    exports.add_argument(
        "--with-secrets",
        action="store_true",
        help="include passwords and tokens in clear (keep the output private)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``mailpool`` argument parser."""
    parser = _Parser(
        prog="mailpool",
        description="Operate a pool of sender accounts: accounts, connection "
        "tests, usage, sending.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(storage=True, json=True)],
    )
    parser.add_argument(
        "--version", action="version", version=f"mailpool {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    _accounts_parser(commands)

    test = _command(
        commands,
        "test-accounts",
        _commands.test_accounts,
        "connect and log in with every active account in scope, without "
        "sending; exit status 1 if one failed or none was tested",
    )
    _scope(test)
    test.add_argument(
        "--account-id",
        action="append",
        metavar="ID",
        help="test this account, whatever its status (repeatable)",
    )
    test.add_argument(
        "--email",
        action="append",
        metavar="EMAIL",
        help="test the account with this email, whatever its status (repeatable)",
    )
    test.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="per connection (default: 30)",
    )
    test.add_argument(
        "--deep",
        action="store_true",
        help="also try MAIL FROM and RCPT TO (then RSET, nothing is sent)",
    )
    test.add_argument(
        "--probe",
        metavar="ADDRESS",
        help="the RCPT TO address of --deep (default: the account's own)",
    )

    revive = _command(
        commands,
        "revive",
        _commands.revive,
        "probe the accounts in error whose probe is due (with backoff) and "
        "reactivate those that pass; for a cron job",
    )
    _scope(revive)
    revive.add_argument(
        "--after",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="first probe this long after an account's last error; doubled "
        "after each failed probe, up to a day (default: 300)",
    )
    revive.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="per connection (default: 30)",
    )
    revive.add_argument(
        "--shallow",
        action="store_true",
        help="log in only (default: also MAIL FROM and RCPT TO, then RSET)",
    )
    revive.add_argument(
        "--probe",
        metavar="ADDRESS",
        help="the RCPT TO address of the probe (default: the account's own)",
    )

    reset = _command(
        commands,
        "reset-daily",
        _commands.reset_daily,
        "set today's count of every account (of an owner) to 0",
    )
    reset.add_argument("--owner", help="only this owner's accounts")

    usage = _command(
        commands,
        "usage",
        _commands.usage,
        "per account: status, sent today, limit, left, next possible send, last error",
    )
    _scope(usage)

    explain = _command(
        commands,
        "explain",
        _commands.explain,
        "per account: can it send now, and if not why and when",
    )
    _scope(explain)

    send = _command(
        commands, "send", _commands.send, "send one message through the pool"
    )
    send.add_argument(
        "--to", action="append", required=True, metavar="ADDRESS", help="repeatable"
    )
    send.add_argument("--cc", action="append", metavar="ADDRESS", help="repeatable")
    send.add_argument("--bcc", action="append", metavar="ADDRESS", help="repeatable")
    send.add_argument("--reply-to", metavar="ADDRESS")
    send.add_argument("--subject", required=True)
    body = send.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", metavar="TEXT", help="the plain-text body")
    body.add_argument(
        "--body-file", metavar="FILE", help="the plain-text body (- for stdin)"
    )
    send.add_argument("--html-file", metavar="FILE", help="an HTML alternative")
    _scope(send)
    send.add_argument(
        "--wait",
        type=_positive_float,
        metavar="SECONDS",
        help="wait up to this long for an account inside its minimum wait",
    )

    demo = _command(
        commands,
        "demo",
        _commands.demo,
        "send through a pool of three accounts to a local SMTP server it starts",
        storage=False,
        json=False,
    )
    demo.add_argument("--messages", type=int, default=12, help="how many to send")
    return parser


def _exit_code(error: MailpoolError) -> int:
    if isinstance(error, (SendError, NoAccountAvailable)):
        return EXIT_FAILED
    return EXIT_USAGE


def _run(ctx: Context, handler: Handler) -> int:
    out = ctx.out
    try:
        return handler(ctx, ctx.args)
    except CommandError as exc:
        out.error(str(exc))
        return exc.code
    except MailpoolError as exc:
        out.error(str(exc))
        return _exit_code(exc)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): no traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        out.error(f"{exc.strerror or type(exc).__name__}{where}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except Exception as exc:  # a bug: still one line, still no secret
        out.error(f"unexpected {type(exc).__name__}: {exc}")
        return EXIT_USAGE


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the ``mailpool`` command; returns the exit status.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.CRITICAL + 1,
        format="mailpool: %(levelname)s %(name)s: %(message)s",
    )
    ctx = Context(
        args,
        stdin=stdin or sys.stdin,
        stdout=stdout or sys.stdout,
        stderr=stderr or sys.stderr,
        environ=os.environ if environ is None else environ,
    )
    handler: Handler = args.handler
    try:
        return _run(ctx, handler)
    finally:
        try:
            ctx.close()
        except MailpoolError as exc:
            ctx.out.error(f"closing the storage: {one_line(str(exc))}")
