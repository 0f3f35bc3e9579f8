"""Shared fixtures: TLS material and real SMTP servers on 127.0.0.1."""

from __future__ import annotations

import logging
import pathlib
import ssl
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

# tests/ is not a package and pytest runs with --import-mode=importlib: make the
# helper modules in tests/ and tests/storage/ importable as top-level modules
# (``from smtpserver import SMTPTestServer``, ``from contract import ...``).
_TESTS_DIR = pathlib.Path(__file__).resolve().parent
for _folder in (str(_TESTS_DIR / "storage"), str(_TESTS_DIR)):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)

from mailpool import (  # noqa: E402
    Account,
    AccountPool,
    InMemoryStorage,
    RandomSelector,
    RetryPolicy,
    SMTPSettings,
    SMTPTransport,
)
from mailpool.testing import ManualClock  # noqa: E402

pytest.register_assert_rewrite("mailpool.testing.storage")

from pooltools import ALICE, AccountFactory, PoolFactory  # noqa: E402
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


# -- pools on a real relay (tests/test_pool.py and friends) -----------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()  # 2026-01-01 09:00 UTC


@pytest.fixture
def storage() -> InMemoryStorage:
    return InMemoryStorage()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def add(storage: InMemoryStorage, smtp_server: SMTPTestServer) -> AccountFactory:
    """Store an account on the plain relay; it may send again at once."""

    def add(
        email: str = ALICE, *, password: str | None = None, **fields: Any
    ) -> Account:
        smtp = SMTPSettings(
            host=smtp_server.host,
            port=smtp_server.port,
            use_tls=False,
            password=password,
            allow_insecure_auth=True,
        )
        fields.setdefault("min_wait_time", 0)
        return storage.add(Account(email=email, smtp=smtp, **fields))

    return add


@pytest.fixture
def make_pool(
    storage: InMemoryStorage, clock: ManualClock, sleeps: list[float]
) -> Iterator[PoolFactory]:
    """Pools on ``storage`` (or ``storage=`` another) with a manual clock, a
    seeded selector and retries that record their waits instead of sleeping;
    all closed at the end."""
    pools: list[AccountPool] = []

    def make(**options: Any) -> AccountPool:
        defaults: dict[str, Any] = {
            "clock": clock,
            "selector": RandomSelector(7),
            "transport": SMTPTransport(timeout=5.0),
            "retry": RetryPolicy(jitter=False, sleep=sleeps.append),
        }
        on = options.pop("storage", storage)
        pools.append(AccountPool(on, **{**defaults, **options}))
        return pools[-1]

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def pool(make_pool: PoolFactory) -> AccountPool:
    return make_pool()


# -- no secret in any log record --------------------------------------------------

LEAK_WATCH = frozenset(
    {
        *USERS.values(),
        *OAUTH_TOKENS.values(),
        "wrong-password",
        "hunter2-secret",
        "rotated-pass",
        "pässwörd-ü",
        "app-password-alice",
        "app-password-bob",
        "wrong-password-s3cr3t",
        "ya29.revoked-t0ken",
    }
)
"""Passwords and tokens the suite's accounts and servers use: none may appear
in a log record of mailpool (message, arguments or formatted traceback)."""


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += self._formatter.formatException(record.exc_info)
        self.texts.append(text)


@pytest.fixture(autouse=True)
def no_secret_in_logs() -> Iterator[None]:
    """Every test runs with mailpool logging at DEBUG; afterwards, no record
    may hold a secret of :data:`LEAK_WATCH`."""
    logger = logging.getLogger("mailpool")
    recorder = _Recorder()
    level = logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
    leaked = sorted(s for s in LEAK_WATCH for text in recorder.texts if s in text)
    assert not leaked, f"secrets in mailpool's logs: {leaked}"
