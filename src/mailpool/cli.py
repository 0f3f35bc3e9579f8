"""The ``mailpool`` command: a demo, and a look at the accounts of a storage.

Output never shows passwords or tokens.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mailpool._demo import run_demo
from mailpool.errors import MailpoolError
from mailpool.pool import AccountPool
from mailpool.storage import open_storage

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailpool", description="Send email through a pool of sender accounts."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="send through a pool to a local SMTP server it starts"
    )
    demo.add_argument("--messages", type=int, default=12, help="how many to send")
    for name, help_text in (
        ("usage", "show today's sends and what is left, per account"),
        ("test", "connect and log in with each active account, without sending"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("storage", help="storage URL, e.g. json:///path/to.json")
        command.add_argument("--owner", help="only this owner's accounts")
        command.add_argument("--tag", help="only accounts with this tag")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo":
            return run_demo(args.messages)
        storage = open_storage(args.storage)
        try:
            with AccountPool(storage, owner=args.owner, tag=args.tag) as pool:
                if args.command == "usage":
                    for account, sent, remaining in pool.usage():
                        print(
                            f"{account.email}\t{account.status.value}\t"
                            f"sent {sent}/{account.daily_limit}\t{remaining} left"
                        )
                    return 0
                results = pool.test_connections()
                for result in results:
                    mark = "ok  " if result.success else "FAIL"
                    print(f"{mark} {result.account_email}: {result.message}")
                return 0 if all(r.success for r in results) else 1
        finally:
            storage.close()
    except MailpoolError as exc:
        print(f"mailpool: {exc}", file=sys.stderr)
        return 2
