"""AccountPool: pick an eligible account, reserve a unit of its quota, send."""

from __future__ import annotations

import copy
import logging
import re
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, tzinfo
from email.message import EmailMessage
from email.utils import formataddr, getaddresses, make_msgid
from functools import partial
from types import TracebackType

from mailpool._retry import RetryPolicy
from mailpool._validation import check_email, check_header_value, message_recipients
from mailpool.clock import Clock, local_now, resolve_timezone, system_clock
from mailpool.errors import (
    AccountNotFound,
    AuthenticationError,
    ConfigurationError,
    DeliveryUnknown,
    MailpoolError,
    MessageRejected,
    NoAccountAvailable,
    NoAccountReason,
    SendError,
)
from mailpool.models import (
    Account,
    AccountStatus,
    AccountUsage,
    ConnectionTestResult,
    SendResult,
    seconds_until_next_day,
)
from mailpool.selection import SelectorLike, as_selector
from mailpool.storage.base import Reservation, Scope, Storage
from mailpool.transport import SMTPTransport, Transport

__all__ = ["AccountPool"]

log = logging.getLogger("mailpool.pool")

# A line break not followed by folding white space starts a new header line.
_HEADER_BREAK = re.compile(r"\r?\n(?![ \t])|\r(?!\n)")


class AccountPool:
    """Sends mail through the accounts of a storage, within their limits.

    Each send picks an eligible account (active, under its daily limit, its
    minimum wait elapsed) with the selector, atomically reserves one unit of
    its quota, sends with retries, and gives the unit back if the send failed.

    :param storage: where the accounts live (any :class:`~mailpool.Storage`).
    :param owner: use only this owner's accounts.
    :param tag: use only accounts with this tag (e.g. a campaign).
    :param account_ids: use only these accounts.
    :param selector: picks among eligible accounts; random by default.
    :param transport: sends the message; a new :class:`SMTPTransport` by default.
    :param retry: retries of transient failures on one account.
    :param failover: how many other accounts to try after one fails.
    :param clock: returns the current aware datetime; the system clock by default.
    :param timezone: the zone whose midnight resets daily counts (UTC default).
        Pools sharing a storage should use the same zone.
    :raises ConfigurationError: for a negative ``failover`` or unknown zone.
    """

    def __init__(
        self,
        storage: Storage,
        /,
        *,
        owner: str | None = None,
        tag: str | None = None,
        account_ids: Iterable[str] | None = None,
        selector: SelectorLike | None = None,
        transport: Transport | None = None,
        retry: RetryPolicy | None = None,
        failover: int = 2,
        clock: Clock | None = None,
        timezone: tzinfo | str | None = None,
    ) -> None:
        if failover < 0:
            raise ConfigurationError(f"failover must be 0 or more (got {failover})")
        self.storage = storage
        self.scope = Scope(
            owner=owner,
            tag=tag,
            account_ids=None if account_ids is None else frozenset(account_ids),
        )
        self.failover = failover
        self.retry = retry or RetryPolicy()
        self.timezone = resolve_timezone(timezone)
        self._selector = as_selector(selector)
        self._transport = transport if transport is not None else SMTPTransport()
        self._clock = clock or system_clock

    def __repr__(self) -> str:
        return f"<AccountPool {self.scope.describe()} storage={self.storage!r}>"

    def __enter__(self) -> AccountPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the transport's connections. The storage stays open."""
        self._transport.close()

    def now(self) -> datetime:
        """The current time in the pool's time zone."""
        return local_now(self._clock, self.timezone)

    def send(self, message: EmailMessage, /) -> SendResult:
        """Send ``message`` through one eligible account.

        ``From`` is set to the account's ``"Sender Name <email>"`` when the
        message has none, and ``Message-ID`` when missing. The message given
        is not modified.

        :raises ConfigurationError: the message has no or invalid recipients,
            or a header value with a line break.
        :raises NoAccountAvailable: no account could be reserved (``reason``
            and ``retry_after`` say why and for how long).
        :raises MessageRejected: the server refused the message or all its
            recipients; not retried on other accounts.
        :raises DeliveryUnknown: the connection was lost after the message was
            handed over; it may have been delivered, and it counts.
        :raises SendError: every account tried failed; the last error.
        """
        _check_message(message)
        tried: set[str] = set()
        attempts = 0
        message_id = str(message["Message-ID"] or "")
        last_error: SendError | None = None

        def count_attempt() -> None:
            nonlocal attempts
            attempts += 1

        while len(tried) <= self.failover:
            reservation = self._reserve(tried)
            if reservation is None:
                break
            account = reservation.account
            tried.add(account.id)
            message_id = message_id or make_msgid(domain=_domain(account.email))
            try:
                prepared = _prepare(message, account, message_id)
                refused = self.retry.call(
                    partial(self._transport.send, account, prepared), count_attempt
                )
            except DeliveryUnknown:
                # The server may have accepted it: keep the unit, do not resend.
                raise
            except SendError as exc:
                self.storage.release(reservation)
                if isinstance(exc, MessageRejected):
                    raise
                if isinstance(exc, AuthenticationError):
                    self._mark_error(account, exc)
                log.warning("send through %s failed: %s", account.email, exc)
                last_error = exc
                continue
            # Any other exception (KeyboardInterrupt, a bug in a custom transport)
            # keeps the reservation: counting a message that was not sent is
            # safe, sending past a daily limit is not.
            log.info("sent %s through %s", message_id, account.email)
            return SendResult(
                account_id=account.id,
                account_email=account.email,
                message_id=message_id,
                sent_at=self.now(),
                attempts=attempts,
                refused_recipients=tuple(refused or ()),
            )
        if last_error is not None:
            raise last_error
        raise self._unavailable()

    def send_mail(
        self,
        *,
        subject: str,
        body: str,
        to: str | Iterable[str],
        html: str | None = None,
        cc: str | Iterable[str] = (),
        bcc: str | Iterable[str] = (),
        reply_to: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> SendResult:
        """Build a message (plain text, plus an HTML alternative if given) and
        :meth:`send` it. Addresses may be ``"Name <addr>"`` strings.

        :raises ConfigurationError: for invalid addresses or a line break in
            a header value; plus everything :meth:`send` raises.
        """
        message = EmailMessage()
        fields: dict[str, str] = {"Subject": subject}
        for name, value in (("To", to), ("Cc", cc), ("Bcc", bcc)):
            addresses = [value] if isinstance(value, str) else list(value)
            if addresses:
                fields[name] = ", ".join(addresses)
        if reply_to is not None:
            fields["Reply-To"] = reply_to
            _check_addresses([reply_to])
        fields.update(headers or {})
        for name, value in fields.items():
            try:
                message[name] = check_header_value(name, value)
            except ValueError as exc:
                raise ConfigurationError(f"invalid {name} header: {exc}") from exc
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
        return self.send(message)

    def test_connection(self, account: str, /) -> ConnectionTestResult:
        """Connect and log in with one account (by id or email) without sending.

        Never changes the account's status or counts.

        :raises AccountNotFound: no account in this pool's scope matches.
        """
        return self._test(self._lookup(account))

    def test_connections(self) -> list[ConnectionTestResult]:
        """:meth:`test_connection` for every active account in scope, in
        parallel (up to 8 at a time), ordered by email."""
        accounts = self._accounts(status=AccountStatus.ACTIVE)
        if not accounts:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(accounts))) as executor:
            return list(executor.map(self._test, accounts))

    def usage(self) -> list[AccountUsage]:
        """Today's ``(account, sent_today, remaining)`` for every account in
        scope, ordered by email."""
        day = self.now().date()
        return [
            AccountUsage(account, account.sent_on(day), account.remaining_on(day))
            for account in self._accounts()
        ]

    def reset_daily_counts(self) -> int:
        """Set today's count to 0 for every account of the pool's owner (all
        accounts when the pool has no owner).

        :returns: how many accounts had sent something.
        :raises ConfigurationError: when the pool is scoped by tag or account
            ids, which a reset cannot be narrowed to; call
            ``storage.reset_daily_counts(owner=...)`` instead.
        """
        if self.scope.tag is not None or self.scope.account_ids is not None:
            raise ConfigurationError(
                "reset_daily_counts() resets by owner and this pool is scoped by "
                "tag or account ids: call storage.reset_daily_counts(owner=...)"
            )
        return self.storage.reset_daily_counts(owner=self.scope.owner)

    def _accounts(self, status: AccountStatus | None = None) -> list[Account]:
        found = self.storage.accounts(
            owner=self.scope.owner, tag=self.scope.tag, status=status
        )
        return [account for account in found if self.scope.matches(account)]

    def _lookup(self, key: str) -> Account:
        try:
            account = self.storage.get(key)
        except AccountNotFound:
            account = self.storage.get_by_email(key)
        if not self.scope.matches(account):
            raise AccountNotFound(key)
        return account

    def _test(self, account: Account) -> ConnectionTestResult:
        try:
            message = self._transport.check(account)
        except SendError as exc:
            return ConnectionTestResult(
                account_id=account.id,
                account_email=account.email,
                success=False,
                message=_sentence(str(exc)),
            )
        return ConnectionTestResult(
            account_id=account.id,
            account_email=account.email,
            success=True,
            message=message,
        )

    def _reserve(self, tried: set[str]) -> Reservation | None:
        """Reserve an eligible account not tried yet; None when there is none."""
        lost: set[str] = set()
        while True:
            now = self.now()
            candidates = [
                account
                for account in self.storage.eligible(self.scope, now)
                if account.id not in tried and account.id not in lost
            ]
            if not candidates:
                return None
            chosen = self._selector.choose(candidates)
            if not any(chosen.id == account.id for account in candidates):
                raise ConfigurationError(
                    f"the selector {self._selector!r} returned {chosen.email}, which "
                    "is not one of the candidates it was given"
                )
            reservation = self.storage.reserve(chosen.id, now)
            if reservation is not None:
                return reservation
            # Another worker took its last unit (or stamped it) first.
            lost.add(chosen.id)

    def _mark_error(self, account: Account, error: AuthenticationError) -> None:
        """Set the account's status to error, unless its credentials changed
        since the send began (someone may just have fixed them)."""
        try:
            current = self.storage.get(account.id)
            if (current.smtp, current.oauth2) != (account.smtp, account.oauth2):
                return
            self.storage.update(
                current.replace(status=AccountStatus.ERROR, status_reason=str(error))
            )
        except MailpoolError as exc:
            log.warning("could not set %s to status error: %s", account.email, exc)
            return
        log.error("account %s set to status error: %s", account.email, error)

    def _unavailable(self) -> NoAccountAvailable:
        now = self.now()
        day = now.date()
        accounts = self._accounts()
        where = self.scope.describe()
        if not accounts:
            return NoAccountAvailable(
                f"no account in scope ({where}): add accounts or widen the scope",
                reason=NoAccountReason.NO_ACCOUNTS,
            )
        active = [a for a in accounts if a.status is AccountStatus.ACTIVE]
        if not active:
            statuses = Counter(a.status.value for a in accounts)
            summary = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
            return NoAccountAvailable(
                f"no active account in scope ({where}): {summary}; activate one, "
                "or fix the accounts in error and set them active again",
                reason=NoAccountReason.ALL_INACTIVE,
            )
        with_quota = [a for a in active if a.remaining_on(day) > 0]
        if not with_quota:
            retry_after = seconds_until_next_day(now)
            return NoAccountAvailable(
                f"{_all(len(active), 'active account')} in scope ({where}) reached "
                f"the daily limit; counts reset at midnight {self.timezone} "
                f"(in {retry_after:.0f} s)",
                reason=NoAccountReason.ALL_AT_LIMIT,
                retry_after=retry_after,
            )
        wait = min(a.wait_left(now) for a in with_quota)
        return NoAccountAvailable(
            f"every active account in scope ({where}) with quota left is within its "
            f"minimum wait between sends; retry in {wait:.1f} s",
            reason=NoAccountReason.ALL_WAITING,
            retry_after=wait,
        )


_FIELD_NAME = re.compile(r"[!-9;-~]+")


def _check_message(message: EmailMessage) -> None:
    for name, value in message.items():
        if not _FIELD_NAME.fullmatch(name):
            raise ConfigurationError(f"invalid header name {name!r}")
        if _HEADER_BREAK.search(str(value)):
            raise ConfigurationError(
                f"the {name} header contains a line break (CR or LF): remove it, "
                "it could inject extra headers"
            )
    recipients = message_recipients(message)
    if not recipients:
        raise ConfigurationError("the message has no recipients: set To, Cc or Bcc")
    _check_addresses(recipients)


def _check_addresses(addresses: Iterable[str]) -> None:
    for _, address in getaddresses(list(addresses)):
        try:
            check_email(address)
        except ValueError as exc:
            raise ConfigurationError(f"invalid address: {exc}") from exc


def _prepare(message: EmailMessage, account: Account, message_id: str) -> EmailMessage:
    prepared = copy.deepcopy(message)
    if prepared["From"] is None:
        prepared["From"] = formataddr((account.sender_name, account.email))
    if prepared["Message-ID"] is None:
        prepared["Message-ID"] = message_id
    return prepared


def _all(count: int, noun: str) -> str:
    return f"the only {noun}" if count == 1 else f"all {count} {noun}s"


def _domain(email: str) -> str:
    return email.rpartition("@")[2]


def _sentence(text: str) -> str:
    text = text.strip() or "The connection test failed for an unknown reason"
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."
