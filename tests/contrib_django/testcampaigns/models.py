"""A campaign with the accounts assigned to it (the pattern docs/django.md
describes)."""

from __future__ import annotations

from django.db import models

from mailpool.contrib.django.models import EmailAccount


class Campaign(models.Model):
    name = models.CharField(max_length=100)
    accounts = models.ManyToManyField(EmailAccount, related_name="campaigns")

    class Meta:
        app_label = "testcampaigns"

    def __str__(self) -> str:
        return str(self.name)
