"""A campaign sends one message to its recipients through the email accounts
assigned to it, and through no other."""

from __future__ import annotations

from django.db import models

from mailpool.contrib.django.models import EmailAccount


class Campaign(models.Model):
    name = models.SlugField(unique=True)
    subject = models.CharField(max_length=200)
    body = models.TextField()
    recipients = models.TextField(help_text="One address per line.")
    accounts = models.ManyToManyField(
        EmailAccount,
        related_name="campaigns",
        help_text="The accounts this campaign sends through.",
    )

    def __str__(self) -> str:
        return str(self.name)

    def recipient_list(self) -> list[str]:
        return [
            line.strip() for line in str(self.recipients).splitlines() if line.strip()
        ]
