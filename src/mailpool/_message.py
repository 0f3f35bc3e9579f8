"""The message a pool sends: checked once, prepared once per account.

The caller's :class:`~email.message.EmailMessage` is never modified. What a
send adds (``From``, ``Message-ID``, ``Date``) goes on a copy of its header
list; the body is shared, not copied, whatever its size.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime, formataddr, getaddresses, make_msgid
from typing import TypeVar

from mailpool._validation import check_email, check_header_value, message_recipients
from mailpool.errors import ConfigurationError
from mailpool.models import Account

__all__ = ["PreparedMessage", "check_addresses", "check_message"]

# Folding white space: a CRLF (or LF) followed by a space or tab, as in the
# headers of a parsed message. Every other line break is refused.
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_FIELD_NAME = re.compile(r"[!-9;-~]+")

M = TypeVar("M", bound=Message)


def check_message(message: EmailMessage) -> None:
    """Refuse what must not be sent: bad header names, header line breaks,
    no or invalid recipients.

    :raises ConfigurationError: saying what to fix.
    """
    for name, value in message.items():
        if not _FIELD_NAME.fullmatch(name):
            raise ConfigurationError(f"invalid header name {name!r}")
        try:
            check_header_value(f"the {name} header", _FOLD.sub("", str(value)))
        except ValueError as exc:
            raise ConfigurationError(f"{exc}: remove it") from None
    recipients = message_recipients(message)
    if not recipients:
        raise ConfigurationError("the message has no recipients: set To, Cc or Bcc")
    for address in recipients:
        try:
            ascii_form = check_email(address)
        except ValueError as exc:
            raise ConfigurationError(f"invalid address: {exc}") from None
        if ascii_form != address:
            raise ConfigurationError(
                f"the recipient {address!r} has an internationalized domain: "
                f"write it in its ASCII form {ascii_form!r}"
            )


def check_addresses(addresses: Iterable[str]) -> None:
    """Refuse an invalid address among ``"Name <addr>"`` strings.

    :raises ConfigurationError: naming the address.
    """
    for _, address in getaddresses(list(addresses)):
        try:
            check_email(address)
        except ValueError as exc:
            raise ConfigurationError(f"invalid address: {exc}") from exc


class PreparedMessage:
    """One message on its way: ``Message-ID`` and ``Date`` fixed once, a
    copy per account (with its ``From`` when the message has none), reused by
    every retry through that account."""

    def __init__(self, message: EmailMessage, now: datetime) -> None:
        self.original = message
        self._message_id = str(message["Message-ID"] or "") or None
        self._date = None if message["Date"] is not None else format_datetime(now)
        self._copies: dict[str, EmailMessage] = {}

    def message_id(self, account: Account) -> str:
        """The message's ``Message-ID``, made (on the first account's domain)
        when the message has none."""
        if self._message_id is None:
            self._message_id = make_msgid(domain=account.email.rpartition("@")[2])
        return self._message_id

    def for_account(self, account: Account) -> EmailMessage:
        """The message as ``account`` sends it."""
        prepared = self._copies.get(account.id)
        if prepared is None:
            prepared = _copy_headers(self.original)
            added: list[tuple[str, str]] = []
            if prepared["From"] is None:
                added.append(("From", formataddr((account.sender_name, account.email))))
            if prepared["Message-ID"] is None:
                added.append(("Message-ID", self.message_id(account)))
            if self._date is not None:
                added.append(("Date", self._date))
            # Stored as the parser stores headers read from a file: raw text,
            # parsed only when read, written as it is when it fits on a line
            # (formataddr encodes a non-ASCII name; a longer line is folded).
            # Through ``message[name] = value`` each would be parsed at once,
            # which took most of the pool's time per send.
            prepared._headers.extend(added)  # type: ignore[attr-defined]
            self._copies[account.id] = prepared
        return prepared


def _copy_headers(part: M) -> M:
    """``part`` with its own header lists (its own and those of its multipart
    containers, where the generator may add a MIME boundary) and shared
    leaf payloads."""
    clone = copy.copy(part)
    # Message keeps its headers in the private list ``_headers`` (every Python
    # version mailpool supports); a copy of that list is what isolates them.
    clone._headers = list(part._headers)  # type: ignore[attr-defined]
    if part.is_multipart():
        payload = part.get_payload()
        assert isinstance(payload, list)
        clone.set_payload(
            [_copy_headers(c) if isinstance(c, Message) else c for c in payload]
        )
    return clone
