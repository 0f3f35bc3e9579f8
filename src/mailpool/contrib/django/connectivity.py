"""Connection tests of stored accounts, shared by the admin, the commands and
the endpoint.

They only report: a test never changes an account's status or counts. The
SMTP client is configured by two optional settings:

- ``MAILPOOL_SMTP_TIMEOUT``: seconds for connecting and each reply (15);
- ``MAILPOOL_SSL_CONTEXT``: an :class:`ssl.SSLContext` for STARTTLS and
  implicit TLS (e.g. one that trusts a private CA); the system's CAs by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from mailpool.contrib.django.models import EmailAccount
from mailpool.errors import ConfigurationError
from mailpool.models import Account, ConnectionTestResult
from mailpool.pool import connection_test
from mailpool.transport import SMTPTransport

__all__ = ["check_accounts", "smtp_transport"]

_PARALLEL = 8
"""Connection tests run at the same time at most."""


def smtp_transport() -> SMTPTransport:
    """An SMTP client with the project's settings (see the module docs)."""
    return SMTPTransport(
        timeout=float(getattr(settings, "MAILPOOL_SMTP_TIMEOUT", 15.0)),
        ssl_context=getattr(settings, "MAILPOOL_SSL_CONTEXT", None),
    )


def check_accounts(rows: Iterable[EmailAccount]) -> list[ConnectionTestResult]:
    """Connect and log in with each account, up to 8 at a time, without
    sending; one result per row, in the order given. Never raises for an
    account that fails, nor for one whose stored settings are invalid."""
    rows = list(rows)
    if not rows:
        return []
    transport = smtp_transport()
    try:
        with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(rows))) as executor:
            # Rows are read here, in the caller's thread (and its database
            # connection); the threads only talk SMTP.
            jobs = [(row, _account_or_error(row)) for row in rows]
            return list(executor.map(lambda job: _test(transport, *job), jobs))
    finally:
        transport.close()


def _account_or_error(row: EmailAccount) -> Account | ConfigurationError:
    try:
        return row.to_account()
    except ConfigurationError as exc:
        return exc


def _test(
    transport: SMTPTransport, row: EmailAccount, account: Account | ConfigurationError
) -> ConnectionTestResult:
    if isinstance(account, ConfigurationError):
        problem = str(account).strip().rstrip(".")
        return ConnectionTestResult(
            account_id=str(row.pk),
            account_email=str(row.email),
            success=False,
            message=f"The stored settings are invalid: {problem}.",
        )
    return connection_test(transport, account)
