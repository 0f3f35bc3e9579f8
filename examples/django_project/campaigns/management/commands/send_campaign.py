"""``python manage.py send_campaign NAME``: send a campaign now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns.models import Campaign
from campaigns.sending import send_campaign


class Command(BaseCommand):
    help = "Send a campaign through the accounts assigned to it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = Campaign.objects.filter(name=options["name"]).first()
        if campaign is None:
            raise CommandError(f"no campaign named {options['name']!r}")
        outcome = send_campaign(campaign)
        for address, problem in outcome.failed.items():
            self.stderr.write(f"not sent to {address}: {problem}")
        self.stdout.write(f"{outcome.sent} sent, {len(outcome.failed)} failed.")
        if outcome.failed:
            raise CommandError("some messages were not sent")
