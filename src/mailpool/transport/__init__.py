"""Transports: how a message leaves through one account."""

from __future__ import annotations

from mailpool.transport.base import Transport
from mailpool.transport.oauth2 import RefreshTokenGrant, TokenProvider
from mailpool.transport.smtp import SMTPTransport

__all__ = ["RefreshTokenGrant", "SMTPTransport", "TokenProvider", "Transport"]
