"""Helpers of the Django tests (their fixtures are in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import django
from django.test.utils import override_settings

from mailpool import Account, SMTPSettings
from mailpool.contrib.django.models import EmailAccount
from mailpool.contrib.django.storage import DjangoStorage
from smtpserver import SMTPTestServer

__all__ = [
    "BACKEND",
    "MAILERS",
    "BackendSettings",
    "RowFactory",
    "backend_settings",
    "relay_settings",
    "row_factory",
]

BACKEND = "mailpool.contrib.django.backend.EmailBackend"
MAILERS: bool = django.VERSION >= (6, 1)
"""Whether this Django has the MAILERS setting (6.1 and later)."""

RowFactory = Callable[..., EmailAccount]
BackendSettings = Callable[..., AbstractContextManager[Any]]


def relay_settings(server: SMTPTestServer, **fields: Any) -> SMTPSettings:
    """SMTP settings of an account on the plain test relay."""
    return SMTPSettings(
        host=server.host,
        port=server.port,
        use_tls=False,
        allow_insecure_auth=True,
        **fields,
    )


def row_factory(server: SMTPTestServer) -> RowFactory:
    """Stores an account on the plain relay (no wait between sends) and
    returns its ``EmailAccount`` row."""

    def add(
        email: str = "alice@example.com",
        *,
        username: str | None = None,
        password: str | None = None,
        **fields: Any,
    ) -> EmailAccount:
        fields.setdefault("min_wait_time", 0)
        smtp = relay_settings(server, username=username, password=password)
        account = DjangoStorage().add(Account(email=email, smtp=smtp, **fields))
        row: EmailAccount = EmailAccount.objects.get(pk=account.id)
        return row

    return add


def backend_settings(**options: Any) -> AbstractContextManager[Any]:
    """Settings that make Django send through mailpool's backend with these
    options (EMAIL_BACKEND and MAILPOOL_BACKEND_OPTIONS before Django 6.1, a
    MAILERS entry since)."""
    overridden: AbstractContextManager[Any]
    if MAILERS:
        mailers = {"default": {"BACKEND": BACKEND, "OPTIONS": options}}
        overridden = override_settings(MAILERS=mailers)
    else:
        overridden = override_settings(
            EMAIL_BACKEND=BACKEND, MAILPOOL_BACKEND_OPTIONS=options
        )
    return overridden
