"""Shared fixtures: TLS material and real SMTP servers on 127.0.0.1."""

from __future__ import annotations

import pathlib
import ssl
import sys
from collections.abc import Iterator

import pytest
import trustme

# tests/ is not a package and pytest runs with --import-mode=importlib: make the
# helper modules in tests/ and tests/storage/ importable as top-level modules
# (``from smtpserver import SMTPTestServer``, ``from contract import ...``).
_TESTS_DIR = pathlib.Path(__file__).resolve().parent
for _folder in (str(_TESTS_DIR / "storage"), str(_TESTS_DIR)):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)

from smtpserver import OAUTH_TOKENS, USERS, SMTPTestServer  # noqa: E402


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """Server-side context with a certificate for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """Client-side context (hostname checking on) that trusts :func:`tls_ca`."""
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    """Plain-text local relay: no AUTH required, but USERS may log in."""
    with SMTPTestServer(mode="plain", users=USERS) as server:
        yield server


@pytest.fixture
def smtp_starttls_server(
    server_tls_context: ssl.SSLContext,
) -> Iterator[SMTPTestServer]:
    """Submission-style server: STARTTLS, then AUTH (USERS) is required."""
    with SMTPTestServer(
        mode="starttls",
        users=USERS,
        require_auth=True,
        tls_context=server_tls_context,
    ) as server:
        yield server


@pytest.fixture
def smtp_tls_server(server_tls_context: ssl.SSLContext) -> Iterator[SMTPTestServer]:
    """Implicit-TLS server requiring AUTH: USERS, or XOAUTH2 with OAUTH_TOKENS."""
    with SMTPTestServer(
        mode="tls",
        users=USERS,
        require_auth=True,
        tls_context=server_tls_context,
        oauth_tokens=OAUTH_TOKENS,
    ) as server:
        yield server
