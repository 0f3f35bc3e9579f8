"""``manage.py test_email_accounts``: connect and log in with accounts.

Tests every active account, or the ones named by ``--account-id`` and
``--email`` (whatever their status; both may be repeated). Prints a line per
account (``--json``: a JSON list of results), and exits with status 1 if any
test failed, an account was not found, or nothing was tested. Tests never
change an account's status or counts.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import router

from mailpool.contrib.django.connectivity import check_accounts
from mailpool.contrib.django.models import EmailAccount
from mailpool.models import AccountStatus


class Command(BaseCommand):
    help = (
        "Test the SMTP connection and login of email accounts (all active ones "
        "by default) without sending; exits with 1 if any failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--account-id",
            action="append",
            default=[],
            metavar="ID",
            help="Test this account (repeat for more).",
        )
        parser.add_argument(
            "--email",
            action="append",
            default=[],
            metavar="EMAIL",
            help="Test the account with this address (repeat for more).",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print the results as JSON."
        )
        parser.add_argument(
            "--database",
            default=None,
            help="The database alias of the accounts (default: the router's).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"] or router.db_for_read(EmailAccount)
        rows = EmailAccount.objects.using(using)
        missing: list[str] = []
        if options["account_id"] or options["email"]:
            chosen: dict[str, EmailAccount] = {}
            for account_id in options["account_id"]:
                row = rows.filter(pk=account_id).first()
                if row is None:
                    missing.append(f"no account with id {account_id!r}")
                else:
                    chosen[row.pk] = row
            for address in options["email"]:
                row = rows.filter(email_key=address.strip().casefold()).first()
                if row is None:
                    missing.append(f"no account with email {address!r}")
                else:
                    chosen[row.pk] = row
            selected = sorted(chosen.values(), key=lambda row: row.email_key)
        else:
            active = rows.filter(status=AccountStatus.ACTIVE.value)
            selected = list(active.order_by("email_key"))
        results = check_accounts(selected)
        if options["json"]:
            payload = [result.model_dump(mode="json") for result in results]
            self.stdout.write(json.dumps(payload, indent=2))
        else:
            width = max((len(result.account_email) for result in results), default=0)
            for result in results:
                line = (
                    f"{'ok' if result.success else 'FAILED':6}  "
                    f"{result.account_email:{width}}  {result.message}"
                )
                style = self.style.SUCCESS if result.success else self.style.ERROR
                self.stdout.write(style(line))
        for problem in missing:
            self.stderr.write(self.style.ERROR(problem))
        failed = sum(not result.success for result in results)
        if failed or missing:
            raise CommandError(
                f"{failed} of {len(results)} tested accounts failed"
                + (f"; {len(missing)} not found" if missing else "")
            )
        if not results:
            raise CommandError(
                "no account was tested: there is no active account (add one in "
                "the admin, or name one with --account-id or --email)"
            )
        if not options["json"]:
            self.stdout.write(f"{len(results)} of {len(results)} accounts passed.")
