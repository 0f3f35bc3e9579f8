"""SMTP presets for common mail providers.

``PROVIDERS["gmail"]`` gives host, port and encryption, and for Gmail and
Microsoft 365 the OAuth2 token endpoint and scope; :meth:`Account.for_provider`
turns a preset into an account. The presets need an app password or OAuth2
credentials from the provider: see ``docs/providers.md`` and ``docs/oauth2.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from mailpool.errors import ConfigurationError

__all__ = [
    "GOOGLE_TOKEN_URL",
    "PROVIDERS",
    "ConnectionType",
    "ProviderPreset",
    "microsoft_token_url",
]

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
"""Google's OAuth2 token endpoint (Gmail, Google Workspace)."""
GOOGLE_SMTP_SCOPE = "https://mail.google.com/"
"""The Google scope that SMTP ``AUTH XOAUTH2`` needs."""
MICROSOFT_SMTP_SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
"""The Microsoft scopes for SMTP ``AUTH XOAUTH2``, with a refresh token."""


def microsoft_token_url(tenant: str = "common") -> str:
    """The Microsoft identity platform's token endpoint for ``tenant``.

    :param tenant: the directory (tenant) id, a verified domain such as
        ``contoso.onmicrosoft.com``, or ``common`` / ``organizations`` /
        ``consumers``. Apps registered for one tenant only need its id.
    :raises ConfigurationError: for a tenant that is not a plain name or id.

    .. versionadded:: 0.2
    """
    tenant = tenant.strip()
    if not tenant or not all(c.isalnum() or c in "-._" for c in tenant):
        raise ConfigurationError(
            f"a Microsoft tenant is an id, a domain or 'common' (got {tenant!r})"
        )
    return f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"


class ConnectionType(str, enum.Enum):
    """How an account connects: plain SMTP settings, or a provider's."""

    SMTP = "imap/smtp"
    GMAIL = "gmail"
    OUTLOOK = "outlook"
    YAHOO = "yahoo"


@dataclass(frozen=True)
class ProviderPreset:
    """Server settings of one provider's SMTP submission service, and where
    its OAuth2 access tokens are refreshed (``None`` when it has no OAuth2
    preset).

    .. versionchanged:: 0.2 ``token_url`` and ``scope``.
    """

    name: str
    host: str
    port: int
    use_tls: bool
    use_ssl: bool
    connection_type: ConnectionType
    token_url: str | None = None
    scope: str | None = None


PROVIDERS: Mapping[str, ProviderPreset] = MappingProxyType(
    {
        "gmail": ProviderPreset(
            "gmail",
            "smtp.gmail.com",
            587,
            True,
            False,
            ConnectionType.GMAIL,
            token_url=GOOGLE_TOKEN_URL,
            scope=GOOGLE_SMTP_SCOPE,
        ),
        "outlook": ProviderPreset(
            "outlook",
            "smtp.office365.com",
            587,
            True,
            False,
            ConnectionType.OUTLOOK,
            token_url=microsoft_token_url("common"),
            scope=MICROSOFT_SMTP_SCOPE,
        ),
        "yahoo": ProviderPreset(
            "yahoo", "smtp.mail.yahoo.com", 465, False, True, ConnectionType.YAHOO
        ),
        "zoho": ProviderPreset(
            "zoho", "smtp.zoho.com", 465, False, True, ConnectionType.SMTP
        ),
    }
)
"""Read-only presets by name: ``gmail``, ``outlook``, ``yahoo``, ``zoho``."""
