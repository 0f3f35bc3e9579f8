"""Django for the tests in this folder: settings, databases, fixtures.

Django is configured here, when pytest collects this folder, so that the rest
of the test suite runs without it (and without DJANGO_SETTINGS_MODULE). mypy
skips this file (its module name would clash with tests/conftest.py): the
typed helpers are in djangotools.py.
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

pytest.importorskip("django", reason="the Django tests need mailpool[django]")

_HERE = pathlib.Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailpool_django_settings")

import django  # noqa: E402

django.setup()

from djangotools import (  # noqa: E402
    BackendSettings,
    RowFactory,
    backend_settings,
    row_factory,
)

from smtpserver import SMTPTestServer  # noqa: E402


@pytest.fixture
def add_row(smtp_server: SMTPTestServer) -> RowFactory:
    """Store an account on the plain relay: see djangotools.row_factory."""
    return row_factory(smtp_server)


@pytest.fixture
def pool_backend() -> BackendSettings:
    """``with pool_backend(**options):`` sends through mailpool's backend."""
    return backend_settings
