"""Campaigns in the admin, with their accounts to pick from."""

from __future__ import annotations

from django.contrib import admin

from campaigns.models import Campaign


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("name", "subject")
    filter_horizontal = ("accounts",)
