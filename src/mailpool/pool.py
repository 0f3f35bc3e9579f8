"""AccountPool: pick an eligible account, reserve a unit of its quota, send."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from email.message import EmailMessage
from functools import partial
from types import TracebackType

from mailpool._message import PreparedMessage, check_addresses, check_message
from mailpool._retry import RetryPolicy
from mailpool._validation import check_header_value
from mailpool.clock import Clock, local_now, system_clock
from mailpool.errors import (
    AccountBroken,
    AccountNotFound,
    AccountQuotaExceeded,
    AccountThrottled,
    ConfigurationError,
    DeliveryUnknown,
    MailpoolError,
    MessageRejected,
    NoAccountAvailable,
    NoAccountReason,
    SendError,
)
from mailpool.health import HealthPolicy
from mailpool.models import (
    Account,
    AccountExplanation,
    AccountStatus,
    AccountUsage,
    ConnectionTestResult,
    Failure,
    FailureKind,
    PauseKind,
    SendResult,
    clean_reason,
)
from mailpool.selection import SelectorLike, as_selector, builtin_strategy
from mailpool.storage.base import (
    Claim,
    Lease,
    RecordsFailures,
    Scope,
    Storage,
    Strategy,
)
from mailpool.transport import SMTPTransport, Transport
from mailpool.transport.oauth2 import same_login

__all__ = ["AccountPool"]

log = logging.getLogger("mailpool.pool")

_WAITABLE = (NoAccountReason.ALL_WAITING, NoAccountReason.ALL_BUSY)
_MAX_LEASE = 24 * 3600.0
"""The longest lease_timeout, and the longest wait of one send: a day."""
_BUSY_POLL = 0.02
"""Seconds between two claims while waiting for a busy account."""


class AccountPool:
    """Sends mail through the accounts of a storage, within their limits.

    Each send claims an eligible account (active, under its daily limit, its
    minimum wait elapsed, a send slot free) by the selector's strategy, which
    atomically counts one unit of its quota; it sends with retries, and gives
    the unit back if the send failed.

    :param storage: where the accounts live (any :class:`~mailpool.Storage`).
    :param owner: use only this owner's accounts.
    :param tag: use only accounts with this tag (e.g. a campaign).
    :param account_ids: use only these accounts.
    :param selector: picks among eligible accounts; random by default. The
        built-in selectors run inside the storage; any other sees a random
        sample of at most :data:`~mailpool.storage.CANDIDATE_SAMPLE` eligible
        accounts per send.
    :param transport: sends the message; a new :class:`SMTPTransport` by default.
    :param retry: retries of transient failures on one account.
    :param failover: how many other accounts to try after one fails.
    :param clock: returns the current aware datetime; the system clock by default.
    :param sleep: waits for ``send(wait=...)``; :func:`time.sleep` by default
        (tests pass ``ManualClock.sleep``).
    :param lease_timeout: seconds after which the claim of a worker that died
        mid-send frees its account's send slot (its unit stays counted). Keep
        it above the longest send, retries included.
    :param health: when a failing account leaves rotation (a
        :class:`~mailpool.HealthPolicy`; the defaults when omitted).
    :raises ConfigurationError: for an impossible ``failover`` or
        ``lease_timeout``.

    Each account's daily count resets at midnight in its own time zone
    (:attr:`Account.timezone`), so every pool sharing a storage agrees.
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
        sleep: Callable[[float], None] = time.sleep,
        lease_timeout: float = 300.0,
        health: HealthPolicy | None = None,
    ) -> None:
        if isinstance(failover, bool) or not isinstance(failover, int) or failover < 0:
            raise ConfigurationError(
                f"failover must be a whole number, 0 or more (got {failover!r})"
            )
        if not 0 < lease_timeout <= _MAX_LEASE:
            raise ConfigurationError(
                "lease_timeout must be a number of seconds above 0 and at most "
                f"{_MAX_LEASE:g} (got {lease_timeout})"
            )
        self.storage = storage
        self.scope = Scope(
            owner=owner,
            tag=tag,
            account_ids=None if account_ids is None else frozenset(account_ids),
        )
        self.failover = failover
        self.retry = retry or RetryPolicy()
        self.lease_timeout = float(lease_timeout)
        self._selector = as_selector(selector)
        self._strategy, self._rng = builtin_strategy(self._selector)
        self._sleep = sleep
        self._transport = transport if transport is not None else SMTPTransport()
        if isinstance(self._transport, SMTPTransport):  # OAuth2 (issue 10):
            self._transport.bind_storage(storage)  # renewed tokens saved here
        self._clock = clock or system_clock
        self.health = health or HealthPolicy()

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
        """The current time (UTC), from the pool's clock."""
        return local_now(self._clock, timezone.utc)

    def send(
        self, message: EmailMessage, /, *, wait: float | None = None
    ) -> SendResult:
        """Send ``message`` through one eligible account.

        ``From`` is set to the account's ``"Sender Name <email>"`` when the
        message has none, and ``Message-ID`` and ``Date`` when missing. The
        message given is not modified.

        :param wait: when every account in scope with quota left is inside its
            minimum wait or busy with other sends, sleep up to this many
            seconds for the first one to free up instead of raising
            :class:`NoAccountAvailable`. Never waits for the next day's quota.
        :raises ConfigurationError: the message has no or invalid recipients,
            or a header value with a line break.
        :raises NoAccountAvailable: no account could be claimed (``reason``
            and ``retry_after`` say why and for how long).
        :raises MessageRejected: the server refused the message or all its
            recipients; not retried on other accounts.
        :raises DeliveryUnknown: the connection was lost after the message was
            handed over; it may have been delivered, and it counts.
        :raises SendError: every account tried failed; the last error.
        """
        check_message(message)
        if wait is not None and not 0 <= wait <= _MAX_LEASE:
            raise ConfigurationError(
                f"wait must be between 0 and {_MAX_LEASE:g} seconds (got {wait})"
            )
        started = self.now()
        patience = None if wait is None else _Patience(started, wait)
        prepared = PreparedMessage(message, started)
        tried: set[str] = set()
        attempts = 0
        last_error: SendError | None = None

        def count_attempt() -> None:
            nonlocal attempts
            attempts += 1

        while len(tried) <= self.failover:
            lease = self._claim(frozenset(tried), patience)
            if lease is None:
                break
            account = lease.account
            tried.add(account.id)
            try:
                refused = self.retry.call(
                    partial(
                        self._transport.send, account, prepared.for_account(account)
                    ),
                    count_attempt,
                )
            except DeliveryUnknown:
                # The server may have accepted it: it counts, and is not resent.
                self.storage.complete(lease, self.now())
                raise
            except SendError as exc:
                self.storage.release(lease, self.now())
                if isinstance(exc, MessageRejected):
                    raise
                self._record_failure(account, exc)
                log.warning("send through %s failed: %s", account.email, exc)
                last_error = exc
                continue
            except BaseException:
                # KeyboardInterrupt, a bug in a custom transport: whether it was
                # sent is unknown. Counting a message that was not sent is
                # safe, sending past a daily limit is not.
                self.storage.complete(lease, self.now())
                raise
            sent_at = self.now()
            self.storage.complete(lease, sent_at)
            message_id = prepared.message_id(account)
            log.info("sent %s through %s", message_id, account.email)
            return SendResult(
                account_id=account.id,
                account_email=account.email,
                message_id=message_id,
                sent_at=sent_at,
                attempts=attempts,
                refused_recipients=tuple(refused or ()),
            )
        if last_error is not None:
            raise last_error
        raise self._unavailable(frozenset())

    def send_many(
        self,
        messages: Iterable[EmailMessage],
        /,
        *,
        concurrency: int = 1,
        wait: float | None = None,
        on_result: Callable[[int, SendResult | MailpoolError], None] | None = None,
    ) -> list[SendResult | MailpoolError]:
        """Send every message, over up to ``concurrency`` threads.

        A failure does not stop the batch: each message gets its
        :class:`SendResult` or the :class:`MailpoolError` that stopped it, in
        the order of ``messages``.

        :param wait: passed to :meth:`send` for each message.
        :param on_result: called as ``on_result(index, outcome)`` as soon as
            each message is done (from the sending thread), e.g. for progress.
        :raises ConfigurationError: for a ``concurrency`` below 1.
        """
        if concurrency < 1:
            raise ConfigurationError(
                f"concurrency must be 1 or more (got {concurrency})"
            )
        batch = list(messages)

        def send_one(index: int) -> SendResult | MailpoolError:
            outcome: SendResult | MailpoolError
            try:
                outcome = self.send(batch[index], wait=wait)
            except MailpoolError as exc:
                outcome = exc
            if on_result is not None:
                on_result(index, outcome)
            return outcome

        if concurrency == 1 or len(batch) <= 1:
            return [send_one(index) for index in range(len(batch))]
        with ThreadPoolExecutor(
            max_workers=min(concurrency, len(batch)), thread_name_prefix="mailpool"
        ) as executor:
            return list(executor.map(send_one, range(len(batch))))

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
        wait: float | None = None,
    ) -> SendResult:
        """Build a message (plain text, plus an HTML alternative if given) and
        :meth:`send` it (with ``wait``). Addresses may be ``"Name <addr>"``
        strings.

        :raises ConfigurationError: for invalid addresses or a line break in
            a header value; plus everything :meth:`send` raises.
        """
        message = EmailMessage()
        fields: dict[str, object] = {"Subject": subject}
        for name, value in (("To", to), ("Cc", cc), ("Bcc", bcc)):
            addresses = [value] if isinstance(value, str) else list(value)
            if not all(isinstance(address, str) for address in addresses):
                raise ConfigurationError(f"{name} must be strings (addresses)")
            if addresses:
                fields[name] = ", ".join(addresses)
        if reply_to is not None:
            fields["Reply-To"] = reply_to
        fields.update(headers or {})
        for name, field in fields.items():
            try:
                message[name] = check_header_value(name, field)  # type: ignore[arg-type]
            except ValueError as exc:
                raise ConfigurationError(f"invalid {name} header: {exc}") from None
        if reply_to is not None:
            check_addresses([reply_to])
        for part, text in (("body", body), ("html", html)):
            if text is not None and not isinstance(text, str):
                raise ConfigurationError(
                    f"{part} must be a string, not {type(text).__name__}"
                )
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
        return self.send(message, wait=wait)

    def test_connection(
        self, account: str, /, *, deep: bool = False, probe_address: str | None = None
    ) -> ConnectionTestResult:
        """Connect and log in with one account (by id or email) without sending.

        Never changes the account's status or counts.

        :param deep: also issue ``MAIL FROM`` (the account's address) and
            ``RCPT TO`` ``probe_address``, then ``RSET``, without ``DATA``:
            finds the sender-ownership and relay refusals a login alone
            does not. The transport must accept ``check(account, probe=...)``
            (:class:`SMTPTransport` does).
        :param probe_address: the recipient of a deep test; the account's
            own address by default (use an outside address to test relaying).
        :raises AccountNotFound: no account in this pool's scope matches.

        .. versionchanged:: 0.2
           ``deep`` and ``probe_address``.
        """
        if probe_address is not None:
            check_addresses([probe_address])
        return self._test(self._lookup(account), deep, probe_address)

    def test_connections(
        self, *, deep: bool = False, probe_address: str | None = None
    ) -> list[ConnectionTestResult]:
        """:meth:`test_connection` for every active account in scope, in
        parallel (up to 8 at a time), ordered by email."""
        if probe_address is not None:
            check_addresses([probe_address])
        return self._test_all(
            self._accounts(status=AccountStatus.ACTIVE), deep, probe_address
        )

    def revive(
        self, *, deep: bool = True, probe_address: str | None = None
    ) -> list[ConnectionTestResult]:
        """Probe the accounts in ``error`` whose probe is due, and reactivate
        those that pass: the opt-in way back for accounts that failed (see
        docs/replies.md). Call it now and then (a cron job, ``mailpool
        revive``); the pool never calls it by itself.

        Only accounts that mailpool set to ``error`` are probed
        (:attr:`Account.revivable`: not those set to ``error`` by hand). One
        is due at :meth:`HealthPolicy.next_probe`: ``revive_after`` after its
        last error, doubled after each failed probe, at most ``revive_max``.
        The outcome is stored with ``record_failure`` (kinds ``revived`` and
        ``probe_failed``, so every worker shares the backoff), and only if
        the account did not change meanwhile; a passed probe that could not
        reactivate it is reported as a failure.

        :param deep: probe with ``MAIL FROM`` and ``RCPT TO`` too (as
            :meth:`test_connection` does), so that a sender or relay refusal
            is not taken for a fix; ``False``: log in only.
        :returns: the probes made, ordered by email (``success``: reactivated).

        .. versionadded:: 0.2
        """
        if probe_address is not None:
            check_addresses([probe_address])
        now = self.now()
        due = [
            account
            for account in self._accounts(status=AccountStatus.ERROR)
            if (when := self.health.next_probe(account)) is not None and when <= now
        ]
        results = self._test_all(due, deep, probe_address)
        return [
            self._probed(account, result)
            for account, result in zip(due, results, strict=True)
        ]

    def _probed(
        self, account: Account, result: ConnectionTestResult
    ) -> ConnectionTestResult:
        """Store the outcome of the probe of ``account`` (reactivated, or one
        more failed probe), unless the account changed meanwhile; the result
        to report (a passed probe that reactivated nothing is no success)."""
        kind = FailureKind.REVIVED if result.success else FailureKind.PROBE_FAILED
        event = Failure(kind, f"probe failed: {result.message}", self.now())
        try:
            current = self.storage.get(account.id)
            if not same_login(current, account) or not current.revivable:
                stored = current  # changed meanwhile: leave it as it is
            elif isinstance(self.storage, RecordsFailures):
                stored = self.storage.record_failure(account.id, event) or current
            elif result.success:  # no atomic way: a plain update
                stored = self.storage.update(current.with_failure(event))
            else:
                stored = current  # no backoff without record_failure
        except MailpoolError as exc:
            log.warning("could not store the probe of %s: %s", account.email, exc)
            stored, why = account, _sentence(f"the storage failed: {exc}")
        else:
            if stored.status is AccountStatus.ACTIVE:
                log.info("account %s passed its probe, active again", account.email)
            why = "it changed meanwhile."
        if not result.success or stored.status is AccountStatus.ACTIVE:
            return result
        return result.model_copy(
            update={
                "success": False,
                "message": f"{result.message} The account was not reactivated: {why}",
            }
        )

    def explain(self) -> list[AccountExplanation]:
        """For every account in scope, ordered by email: whether it can send
        now, and if not why (inactive, error and its reason, 48/50 sent,
        waiting until T, in flight, held at provider quota until T, cooling
        down until T) and when it can send next.

        .. versionadded:: 0.2
        """
        now = self.now()
        return [AccountExplanation.of(account, now) for account in self._accounts()]

    def usage(self) -> list[AccountUsage]:
        """Today's ``(account, sent_today, remaining)`` for every account in
        scope, ordered by email."""
        now = self.now()
        return [
            AccountUsage(account, account.sent_today(now), account.remaining_today(now))
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

    def _test_all(
        self, accounts: list[Account], deep: bool, probe_address: str | None
    ) -> list[ConnectionTestResult]:
        """:meth:`_test` of each account, up to 8 at a time, in order."""
        if not accounts:
            return []
        test = partial(self._test, deep=deep, probe_address=probe_address)
        with ThreadPoolExecutor(max_workers=min(8, len(accounts))) as executor:
            return list(executor.map(test, accounts))

    def _test(
        self, account: Account, deep: bool = False, probe_address: str | None = None
    ) -> ConnectionTestResult:
        probe = (probe_address or account.email) if deep else None
        return connection_test(self._transport, account, probe=probe)

    def _claim(self, tried: frozenset[str], patience: _Patience | None) -> Lease | None:
        """Claim an eligible account not tried yet; None when there is none
        (after waiting, within ``patience``, for one to free up)."""
        while True:
            claim = Claim(
                self.scope,
                self.now(),
                lease_seconds=self.lease_timeout,
                strategy=self._strategy or Strategy.RANDOM,
                exclude=tried,
                rng=self._rng,
            )
            lease = (
                self.storage.claim(claim)
                if self._strategy is not None
                else self._claim_chosen(claim)
            )
            if lease is not None or patience is None:
                return lease
            left = patience.left(claim.now)
            why = self._unavailable(tried)
            if why.retry_after is None or left <= 0 or why.reason not in _WAITABLE:
                return None
            # A busy account frees up when its send completes, usually long
            # before its lease would expire: look again soon.
            step = why.retry_after
            if why.reason is NoAccountReason.ALL_BUSY:
                step = min(step, _BUSY_POLL)
            step = max(min(step, left), 0.001)
            self._sleep(step)
            patience.slept += step

    def _claim_chosen(self, claim: Claim) -> Lease | None:
        """Claim the account the custom selector picks from a bounded sample."""
        lost: set[str] = set()
        while True:
            sample = dataclasses.replace(claim, exclude=claim.exclude | lost)
            candidates = sorted(
                self.storage.candidates(sample), key=lambda a: a.email.casefold()
            )
            if not candidates:
                return None
            chosen = self._selector.choose(candidates)
            if not any(chosen.id == account.id for account in candidates):
                raise ConfigurationError(
                    f"the selector {self._selector!r} returned {chosen.email}, which "
                    "is not one of the candidates it was given"
                )
            lease = self.storage.claim(
                dataclasses.replace(sample, account_id=chosen.id)
            )
            if lease is not None:
                return lease
            # Another worker took its last unit or slot first.
            lost.add(chosen.id)

    def _record_failure(self, account: Account, error: SendError) -> None:
        """Store what ``error`` says about ``account`` (see :class:`HealthPolicy`)."""
        kind = FailureKind.TRANSIENT
        if isinstance(error, AccountBroken):
            kind = FailureKind.BROKEN
        elif isinstance(error, AccountQuotaExceeded):
            kind = FailureKind.QUOTA
        elif isinstance(error, AccountThrottled):
            kind = FailureKind.THROTTLED
        if not isinstance(self.storage, RecordsFailures):
            if isinstance(error, AccountBroken):
                self._mark_error(account, error)
            return
        try:
            if kind is FailureKind.BROKEN and not same_login(
                self.storage.get(account.id), account
            ):
                return  # its credentials changed since the send began
            stored = self.storage.record_failure(
                account.id,
                Failure(
                    kind,
                    str(error),
                    self.now(),
                    cool_down=self.health.cool_down,
                    max_failures=self.health.max_failures,
                ),
            )
        except MailpoolError as exc:
            log.warning("could not record the failure of %s: %s", account.email, exc)
            return
        if stored is not None and stored.status is not account.status:
            log.error(
                "account %s set to status %s: %s",
                account.email,
                stored.status.value,
                stored.status_reason,
            )

    def _mark_error(self, account: Account, error: SendError) -> None:
        """Set the account's status to error, unless its credentials changed
        since the send began (someone may just have fixed them)."""
        try:
            current = self.storage.get(account.id)
            if not same_login(current, account):  # OAuth2 renewals don't count
                return
            self.storage.update(
                current.replace(
                    status=AccountStatus.ERROR, status_reason=clean_reason(error)
                )
            )
        except MailpoolError as exc:
            log.warning("could not set %s to status error: %s", account.email, exc)
            return
        log.error("account %s set to status error: %s", account.email, error)

    def _unavailable(self, tried: frozenset[str]) -> NoAccountAvailable:
        """Why no account (other than ``tried``) can be claimed now."""
        now = self.now()
        accounts = [a for a in self._accounts() if a.id not in tried]
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
        usable = [a for a in active if a.pause_left(now) <= 0]
        if not usable:
            held = [a for a in active if a.pause_kind is PauseKind.QUOTA]
            cooling = len(active) - len(held)
            first = min(a.pause_left(now) for a in active)
            parts = [
                f"{len(held)} held at the provider's quota until its next reset"
                if held
                else "",
                f"{cooling} cooling down after a throttling reply" if cooling else "",
            ]
            return NoAccountAvailable(
                f"every active account in scope ({where}) is paused: "
                f"{', '.join(p for p in parts if p)}; the first can send again in "
                f"{first:.0f} s",
                reason=NoAccountReason.ALL_PAUSED,
                retry_after=first,
            )
        with_quota = [a for a in usable if a.remaining_today(now) > 0]
        if not with_quota:
            retry_after = min(
                [a.seconds_to_reset(now) for a in usable]
                + [a.pause_left(now) for a in active if a.pause_left(now) > 0]
            )
            paused = len(active) - len(usable)
            also = f" and {paused} more paused (quota or cool-down)" if paused else ""
            return NoAccountAvailable(
                f"{_all(len(usable), 'active account')} in scope ({where}) reached "
                f"the daily limit{also}; counts reset at midnight in each account's "
                f"time zone (the first can send in {retry_after:.0f} s)",
                reason=NoAccountReason.ALL_AT_LIMIT,
                retry_after=retry_after,
            )
        free = [a for a in with_quota if a.busy_left(now) <= 0]
        if not free:
            expiry = min(a.busy_left(now) for a in with_quota)
            return NoAccountAvailable(
                f"every active account in scope ({where}) with quota left has as "
                "many sends in flight as its max_in_flight allows; retry when one "
                f"completes (a send abandoned by its worker frees its slot in "
                f"{expiry:.1f} s)",
                reason=NoAccountReason.ALL_BUSY,
                retry_after=expiry,
            )
        wait = min(a.wait_left(now) for a in free)
        return NoAccountAvailable(
            f"every active account in scope ({where}) with quota left is within its "
            f"minimum wait between sends; retry in {wait:.1f} s",
            reason=NoAccountReason.ALL_WAITING,
            retry_after=wait,
        )


@dataclasses.dataclass
class _Patience:
    """How long one ``send(wait=...)`` may still wait: the bound ends by the
    pool's clock or by the time slept, whichever is first (a clock that does
    not move, such as a paused ManualClock, cannot make it wait forever)."""

    started: datetime
    wait: float
    slept: float = 0.0

    def left(self, now: datetime) -> float:
        elapsed = max((now - self.started).total_seconds(), self.slept)
        return self.wait - elapsed


def _all(count: int, noun: str) -> str:
    return f"the only {noun}" if count == 1 else f"all {count} {noun}s"


def connection_test(
    transport: Transport, account: Account, *, probe: str | None = None
) -> ConnectionTestResult:
    """Connect and log in with ``account`` through ``transport`` without
    sending (with ``probe``, a deep test: ``MAIL FROM`` and ``RCPT TO``
    ``probe`` too, which the transport must accept as ``check(account,
    probe=...)``); the result, whose message is a sentence for a person."""
    try:
        if probe is not None:
            check: Callable[..., str] = transport.check
            message = check(account, probe=probe)
        else:
            message = transport.check(account)
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
        message=_sentence(message),
    )


def _sentence(text: str) -> str:
    text = text.strip() or "The connection test failed for an unknown reason"
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."
