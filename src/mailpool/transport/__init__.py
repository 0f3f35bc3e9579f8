"""Transports: how a message leaves through one account."""

from __future__ import annotations

from mailpool.transport.base import Transport
from mailpool.transport.smtp import SMTPTransport

__all__ = ["SMTPTransport", "Transport"]
