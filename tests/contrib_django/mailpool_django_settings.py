"""Django settings of the tests in tests/contrib_django (and of their child processes).

The ``default`` database is SQLite, or PostgreSQL with
``MAILPOOL_TEST_DJANGO_DB=postgresql``. When ``MAILPOOL_TEST_POSTGRES_URL`` is
set, the other kind is there too, under its own alias (``sqlite`` or
``postgresql``), so that the storage tests run on both in one session.
SQLite files live in ``MAILPOOL_TEST_DJANGO_DIR`` (a new temporary folder,
exported for the child processes, by default).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import django

POSTGRES_URL = os.environ.get("MAILPOOL_TEST_POSTGRES_URL")
DEFAULT_KIND = os.environ.get("MAILPOOL_TEST_DJANGO_DB", "sqlite")
if DEFAULT_KIND not in ("sqlite", "postgresql"):
    raise RuntimeError(
        f"MAILPOOL_TEST_DJANGO_DB must be sqlite or postgresql, not {DEFAULT_KIND!r}"
    )
if DEFAULT_KIND == "postgresql" and not POSTGRES_URL:
    raise RuntimeError(
        "MAILPOOL_TEST_DJANGO_DB=postgresql needs MAILPOOL_TEST_POSTGRES_URL"
    )

_folder = os.environ.get("MAILPOOL_TEST_DJANGO_DIR")
if not _folder:
    _folder = os.environ["MAILPOOL_TEST_DJANGO_DIR"] = tempfile.mkdtemp(
        prefix="mailpool-django-"
    )
FOLDER = Path(_folder)


def _sqlite() -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(FOLDER / "mailpool.sqlite3"),
        # No fsync: a test database need not survive a power cut. WAL lets
        # readers work while one claim writes.
        "OPTIONS": {
            "timeout": 60,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF",
        },
        "TEST": {"NAME": str(FOLDER / "test-mailpool.sqlite3"), "DEPENDENCIES": []},
    }


def _postgresql(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        # A test database of its own, so that sessions sharing a server never
        # drop each other's.
        "TEST": {
            "NAME": f"test_mailpool_django_{uuid.uuid4().hex[:10]}",
            "DEPENDENCIES": [],
        },
    }


DATABASES: dict[str, dict[str, Any]] = {}
if DEFAULT_KIND == "sqlite":
    DATABASES["default"] = _sqlite()
    if POSTGRES_URL:
        DATABASES["postgresql"] = _postgresql(POSTGRES_URL)
else:
    assert POSTGRES_URL is not None
    DATABASES["default"] = _postgresql(POSTGRES_URL)
    DATABASES["sqlite"] = _sqlite()

STORAGE_ALIASES = {
    kind: alias
    for kind, alias in (
        (DEFAULT_KIND, "default"),
        ("sqlite", "sqlite" if "sqlite" in DATABASES else None),
        ("postgresql", "postgresql" if "postgresql" in DATABASES else None),
    )
    if alias is not None
}
"""The alias of each kind of database there is: {kind: alias}."""

SECRET_KEY = "mailpool-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "mailpool.contrib.django",
    "testcampaigns",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "mailpool_django_urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_FROM_EMAIL = "webmaster@localhost"
SERVER_EMAIL = "root@localhost"
MAILPOOL_SMTP_TIMEOUT = 10.0

BACKEND = "mailpool.contrib.django.backend.EmailBackend"
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": BACKEND}}
else:
    EMAIL_BACKEND = BACKEND
