"""The Django app: ``INSTALLED_APPS += ["mailpool.contrib.django"]``."""

from __future__ import annotations

from django.apps import AppConfig


class MailpoolConfig(AppConfig):
    """mailpool's sender accounts in the project's database and admin.

    The app label is ``mailpool`` (tables ``mailpool_emailaccount`` and
    ``mailpool_emailaccounttag``, permissions ``mailpool.change_emailaccount``).
    """

    name = "mailpool.contrib.django"
    label = "mailpool"
    verbose_name = "Email accounts"
    default_auto_field = "django.db.models.BigAutoField"
