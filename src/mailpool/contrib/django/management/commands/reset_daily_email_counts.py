"""``manage.py reset_daily_email_counts``: set today's counts to 0.

Optional: counts start again by themselves every day (a count from an earlier
day reads as 0), so no cron job is needed. This is for an explicit reset,
e.g. after raising a provider limit mid-day.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from mailpool.contrib.django.storage import DjangoStorage


class Command(BaseCommand):
    help = (
        "Set today's sent count of every account (of one owner) to 0. Optional: "
        "counts start again by themselves every day."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--owner", default=None, help="Only the accounts of this owner."
        )
        parser.add_argument(
            "--database",
            default=None,
            help="The database alias of the accounts (default: the router's).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        storage = DjangoStorage(using=options["database"])
        reset = storage.reset_daily_counts(owner=options["owner"])
        noun = "account" if reset == 1 else "accounts"
        whose = f" of owner {options['owner']!r}" if options["owner"] else ""
        self.stdout.write(
            self.style.SUCCESS(f"Reset today's count of {reset} {noun}{whose}.")
        )
