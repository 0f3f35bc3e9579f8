"""``manage.py revive_email_accounts``: the opt-in way back from ``error``.

Probes every account in ``error`` whose probe is due (``--after`` seconds
after its last error, doubled after each failed probe, up to a day) with a
deep connection test, and sets those that pass back to ``active`` (see
:meth:`mailpool.AccountPool.revive`). Accounts set to ``error`` by hand are
never probed. Meant for a cron job: it exits with status 0 whatever the
probes found.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mailpool.contrib.django.connectivity import smtp_transport
from mailpool.contrib.django.storage import DjangoStorage
from mailpool.errors import ConfigurationError
from mailpool.health import HealthPolicy
from mailpool.pool import AccountPool

DEFAULT = HealthPolicy()


class Command(BaseCommand):
    help = (
        "Probe the email accounts in error whose probe is due (with backoff) and "
        "reactivate those that pass. For a cron job."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--after",
            type=float,
            default=DEFAULT.revive_after,
            metavar="SECONDS",
            help="First probe this long after an account's last error (300).",
        )
        parser.add_argument(
            "--shallow", action="store_true", help="Log in only (no MAIL/RCPT)."
        )
        parser.add_argument(
            "--probe", metavar="ADDRESS", help="The RCPT TO address of the probe."
        )
        parser.add_argument("--owner", default=None, help="Only this owner's.")
        parser.add_argument(
            "--json", action="store_true", help="Print the probes as JSON."
        )
        parser.add_argument(
            "--database",
            default=None,
            help="The database alias of the accounts (default: the router's).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        after = options["after"]
        try:
            policy = HealthPolicy(
                revive_after=after, revive_max=max(after, DEFAULT.revive_max)
            )
            with AccountPool(
                DjangoStorage(using=options["database"]),
                owner=options["owner"],
                transport=smtp_transport(),
                health=policy,
            ) as pool:
                results = pool.revive(
                    deep=not options["shallow"], probe_address=options["probe"]
                )
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            payload = [result.model_dump(mode="json") for result in results]
            self.stdout.write(json.dumps(payload, indent=2))
            return
        width = max((len(result.account_email) for result in results), default=0)
        for result in results:
            mark = "revived" if result.success else "FAILED"
            style = self.style.SUCCESS if result.success else self.style.ERROR
            self.stdout.write(
                style(f"{mark:7}  {result.account_email:{width}}  {result.message}")
            )
        if not results:
            self.stdout.write("No account in error is due for a probe.")
