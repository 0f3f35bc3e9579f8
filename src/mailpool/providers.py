"""SMTP presets for common mail providers.

``PROVIDERS["gmail"]`` gives host, port and encryption; :meth:`Account.for_provider`
turns a preset into an account. The presets need an app password (or an OAuth2
access token) from the provider: see ``docs/providers.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["PROVIDERS", "ConnectionType", "ProviderPreset"]


class ConnectionType(str, enum.Enum):
    """How an account connects: plain SMTP settings, or a provider's."""

    SMTP = "imap/smtp"
    GMAIL = "gmail"
    OUTLOOK = "outlook"
    YAHOO = "yahoo"


@dataclass(frozen=True)
class ProviderPreset:
    """Server settings of one provider's SMTP submission service."""

    name: str
    host: str
    port: int
    use_tls: bool
    use_ssl: bool
    connection_type: ConnectionType


PROVIDERS: Mapping[str, ProviderPreset] = MappingProxyType(
    {
        "gmail": ProviderPreset(
            "gmail", "smtp.gmail.com", 587, True, False, ConnectionType.GMAIL
        ),
        "outlook": ProviderPreset(
            "outlook", "smtp.office365.com", 587, True, False, ConnectionType.OUTLOOK
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
