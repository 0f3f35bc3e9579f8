"""Sending a campaign: one message per recipient, each through one of the
campaign's own accounts (the backend claims an eligible one per message)."""

from __future__ import annotations

from dataclasses import dataclass

from django.core import mail
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from campaigns.models import Campaign
from mailpool import MailpoolError


@dataclass
class Outcome:
    sent: int
    failed: dict[str, str]


def send_campaign(campaign: Campaign) -> Outcome:
    account_ids = list(campaign.accounts.values_list("pk", flat=True))
    messages = []
    for address in campaign.recipient_list():
        message = EmailMessage(campaign.subject, campaign.body, to=[address])
        message.mailpool_account_ids = account_ids
        messages.append(message)
    failed: dict[str, str] = {}
    sent = 0
    # One connection for the whole campaign: each account's SMTP session is
    # opened once and reused.
    with _mailer() as connection:
        for message in messages:
            try:
                sent += connection.send_messages([message])
            except MailpoolError as exc:  # e.g. NoAccountAvailable at the limits
                failed[message.to[0]] = str(exc)
    return Outcome(sent=sent, failed=failed)


def _mailer() -> BaseEmailBackend:
    mailers = getattr(mail, "mailers", None)  # Django 6.1 and later
    if mailers is not None and "default" in mailers:
        backend: BaseEmailBackend = mailers.default
        return backend
    return mail.get_connection()
