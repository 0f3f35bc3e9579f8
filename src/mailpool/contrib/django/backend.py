"""A Django email backend that sends through the pool of accounts.

.. code-block:: python

    # settings.py, Django 5.2 and later
    EMAIL_BACKEND = "mailpool.contrib.django.backend.EmailBackend"

    # or, Django 6.1 and later
    MAILERS = {
        "default": {
            "BACKEND": "mailpool.contrib.django.backend.EmailBackend",
            "OPTIONS": {"owner": "acme", "wait": 30},
        },
    }

Every message Django sends (``send_mail()``, ``EmailMessage.send()``, password
resets, ``mail_admins()``) then claims an eligible account of the pool, goes
out through it, and counts against its daily limit. See docs/django.md.
"""

from __future__ import annotations

import email
import email.policy
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from email.headerregistry import Address, AddressHeader
from email.message import EmailMessage as StdlibEmailMessage
from email.utils import getaddresses, parseaddr
from ssl import SSLContext
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.encoding import force_str, punycode
from django.utils.module_loading import import_string

from mailpool._validation import check_email
from mailpool.errors import ConfigurationError, MailpoolError
from mailpool.pool import AccountPool
from mailpool.selection import (
    LeastUsedSelector,
    RandomSelector,
    RoundRobinSelector,
    SelectorLike,
)
from mailpool.storage import Storage, open_storage
from mailpool.transport import SMTPTransport

__all__ = ["FROM_HEADER_MODES", "EmailBackend"]

FROM_HEADER_MODES = ("default", "account", "message")
"""Values of the ``from_header`` option."""

_SELECTORS = {
    "random": RandomSelector,
    "round_robin": RoundRobinSelector,
    "least_used": LeastUsedSelector,
}

_OPTIONS = (
    "storage",
    "database",
    "owner",
    "tag",
    "account_ids",
    "selector",
    "failover",
    "wait",
    "timeout",
    "ssl_context",
    "from_header",
    "lease_timeout",
)

# Storages opened from a URL, shared by every backend of the process (Django
# makes a backend per message sent with send_mail()).
_URL_STORAGES: dict[str, Storage] = {}
_URL_STORAGES_LOCK = threading.Lock()

ScopeKey = tuple[str | None, str | None, frozenset[str] | None]


class EmailBackend(BaseEmailBackend):
    """Sends Django's messages through an :class:`~mailpool.AccountPool`.

    Options (keyword arguments, or ``OPTIONS`` of a ``MAILERS`` entry):

    :param storage: where the accounts live: ``None`` (the default) for this
        app's ``EmailAccount`` rows, a storage URL such as
        ``"postgresql+psycopg://..."`` (see :func:`mailpool.open_storage`), or
        a :class:`~mailpool.Storage` object.
    :param database: the ``DATABASES`` alias of the app's rows (default:
        what the database routers choose).
    :param owner: use only this owner's accounts.
    :param tag: use only accounts with this tag.
    :param account_ids: use only these accounts (ids, or ``EmailAccount``
        rows).
    :param selector: ``"random"`` (default), ``"round_robin"``,
        ``"least_used"``, a dotted path to a selector class or function, or a
        selector object.
    :param failover: other accounts to try after one fails (2).
    :param wait: seconds a send may wait for an account that is inside its
        minimum wait or busy, instead of failing at once (``None``: no wait).
    :param timeout: SMTP timeout in seconds (30).
    :param ssl_context: an :class:`ssl.SSLContext` for STARTTLS and TLS.
    :param from_header: ``"default"``: a message whose From is
        ``DEFAULT_FROM_EMAIL`` or ``SERVER_EMAIL`` goes out From the account
        that sends it, any other From is kept; ``"account"``: every message
        goes out From its account; ``"message"``: every From is kept.
    :param lease_timeout: seconds after which the claim of a worker that died
        mid-send frees its account (300).
    :param fail_silently: report failures to send by the count returned
        rather than by raising (invalid messages still raise).

    With ``EMAIL_BACKEND``, the setting ``MAILPOOL_BACKEND_OPTIONS`` (a dict)
    gives these options. Any other option is an error
    (:class:`django.core.mail.InvalidMailer` for a ``MAILERS`` entry,
    :class:`TypeError` otherwise), except ``username`` and ``password`` left
    empty: accounts log in with their own credentials.

    A message may choose its own scope with attributes that replace the
    options of the same name: ``message.mailpool_owner``,
    ``message.mailpool_tag``, ``message.mailpool_account_ids``. After a send,
    ``message.mailpool_result`` holds its :class:`~mailpool.SendResult`.

    SMTP sessions stay open from :meth:`open` to :meth:`close` (``with
    backend:``), one per account used; ``send_messages()`` on a closed
    backend opens and closes them itself.

    .. versionadded:: 0.2
    """

    alias: str | None
    """The ``MAILERS`` alias this backend was made for (None otherwise)."""

    def __init__(self, fail_silently: bool = False, **options: Any) -> None:
        alias = options.pop("alias", None)
        ignored = set(options.pop("_ignore_unknown_kwargs", None) or ())
        if alias is None:
            # EMAIL_BACKEND (or get_connection()): the project's defaults first.
            defaults = getattr(settings, "MAILPOOL_BACKEND_OPTIONS", None) or {}
            options = {**defaults, **options}
        for name in ("username", "password"):
            if options.pop(name, None):
                raise _invalid(
                    f"the {name!r} option is not supported: each account logs in "
                    "with its own credentials",
                    alias,
                )
        unknown = sorted(
            name for name in options if name not in _OPTIONS and name not in ignored
        )
        if unknown:
            names = ", ".join(repr(name) for name in unknown)
            message = f"Unknown options {names}; known: {', '.join(_OPTIONS)}."
            if alias is None:
                raise TypeError(f"{_qualname(self)}() got {message}")
            raise _invalid(message, alias)
        if alias is not None:
            super().__init__(alias=alias)
        else:
            super().__init__()
            self.alias = None
        self.fail_silently = fail_silently
        known = {name: value for name, value in options.items() if name in _OPTIONS}
        try:
            self._configure(**known)
        except ConfigurationError as exc:
            raise _invalid(str(exc), alias) from exc

    def _configure(
        self,
        *,
        storage: Storage | str | None = None,
        database: str | None = None,
        owner: str | None = None,
        tag: str | None = None,
        account_ids: Iterable[Any] | None = None,
        selector: SelectorLike | str | None = None,
        failover: int = 2,
        wait: float | None = None,
        timeout: float = 30.0,
        ssl_context: SSLContext | None = None,
        from_header: str = "default",
        lease_timeout: float = 300.0,
    ) -> None:
        """Check and keep the options (ConfigurationError for a bad one)."""
        if from_header not in FROM_HEADER_MODES:
            raise ConfigurationError(
                f"from_header must be one of {', '.join(FROM_HEADER_MODES)} "
                f"(got {from_header!r})"
            )
        if isinstance(failover, bool) or not isinstance(failover, int) or failover < 0:
            raise ConfigurationError(f"failover must be 0 or more (got {failover!r})")
        if not lease_timeout > 0:
            raise ConfigurationError(
                f"lease_timeout must be a positive number of seconds "
                f"(got {lease_timeout!r})"
            )
        if wait is not None and not wait >= 0:
            raise ConfigurationError(f"wait must be 0 or more seconds (got {wait!r})")
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be positive (got {timeout!r})")
        self._selector = _selector(selector)
        self.from_header = from_header
        self.owner = owner
        self.tag = tag
        self.account_ids = None if account_ids is None else _ids(account_ids)
        self.wait = wait
        self.failover = failover
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.lease_timeout = lease_timeout
        self._storage_option = storage
        self._database = database
        self._storage: Storage | None = None
        self._transport: SMTPTransport | None = None
        self._pools: dict[ScopeKey, AccountPool] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<{_qualname(self)} alias={self.alias!r}>"

    @property
    def storage(self) -> Storage:
        """The storage the accounts are read from (opened on first use)."""
        with self._lock:
            if self._storage is None:
                self._storage = _open(self._storage_option, self._database)
            return self._storage

    def open(self) -> bool:
        """Start keeping SMTP sessions open (until :meth:`close`).

        :returns: True if the backend was closed before, False if it was
            already open. No connection is made before a message is sent.
        """
        with self._lock:
            if self._transport is not None:
                return False
            self._transport = SMTPTransport(
                timeout=self.timeout, ssl_context=self.ssl_context
            )
            return True

    def close(self) -> None:
        """Close the SMTP sessions. Idempotent; the backend can be reopened."""
        with self._lock:
            transport, self._transport = self._transport, None
            self._pools.clear()
        if transport is not None:
            transport.close()

    def send_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        """Send each message through an account of the pool.

        :returns: how many were sent. A message without recipients is
            skipped. With ``fail_silently`` a message that could not be sent
            is skipped too; otherwise the first failure is raised (a
            :class:`~mailpool.MailpoolError`, e.g.
            :class:`~mailpool.NoAccountAvailable`), after the messages before
            it were sent.
        :raises ConfigurationError: (a ``ValueError``) for an invalid address
            or header, whatever ``fail_silently`` says.
        """
        sent = 0
        with self._lock:
            opened = self.open()
            try:
                for message in email_messages:
                    if self._send(message):
                        sent += 1
            finally:
                if opened:
                    self.close()
        return sent

    # -- one message -------------------------------------------------------------

    def _send(self, message: EmailMessage) -> bool:
        if not message.recipients():
            return False
        prepared = self._prepare(message)
        pool = self._pool(message)
        try:
            result = pool.send(prepared, wait=self.wait)
        except ConfigurationError:
            raise
        except MailpoolError:
            if self.fail_silently:
                return False
            raise
        message.mailpool_result = result
        return True

    def _prepare(self, message: EmailMessage) -> StdlibEmailMessage:
        """The message as the pool sends it: Django's rendering, its From
        kept or dropped (``from_header``), and the envelope recipients."""
        envelope = [_addr_spec(address) for address in message.recipients()]
        rendered = message.message()
        if isinstance(rendered, StdlibEmailMessage):
            prepared = rendered
        else:  # Django 5.2: an email.mime message with the compat32 policy
            prepared = email.message_from_bytes(
                rendered.as_bytes(linesep="\n"),
                _class=StdlibEmailMessage,
                policy=email.policy.default,
            )
        if self._account_from(message):
            del prepared["From"]
        _set_envelope(prepared, envelope)
        return prepared

    def _account_from(self, message: EmailMessage) -> bool:
        """Whether ``message`` goes out From its account (see ``from_header``)."""
        if self.from_header != "default":
            return self.from_header == "account"
        sender = message.extra_headers.get("From", message.from_email)
        placeholders = {
            _plain_address(settings.DEFAULT_FROM_EMAIL),
            _plain_address(settings.SERVER_EMAIL),
        }
        return _plain_address(sender) in placeholders

    def _pool(self, message: EmailMessage) -> AccountPool:
        owner = getattr(message, "mailpool_owner", None) or self.owner
        tag = getattr(message, "mailpool_tag", None) or self.tag
        ids = getattr(message, "mailpool_account_ids", None)
        account_ids = self.account_ids if ids is None else _ids(ids)
        key: ScopeKey = (owner, tag, account_ids)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                assert self._transport is not None, "send_messages() opens it"
                pool = self._pools[key] = AccountPool(
                    self.storage,
                    owner=owner,
                    tag=tag,
                    account_ids=account_ids,
                    selector=self._selector,
                    transport=self._transport,
                    failover=self.failover,
                    lease_timeout=self.lease_timeout,
                )
            return pool


def _qualname(backend: object) -> str:
    return f"{type(backend).__module__}.{type(backend).__qualname__}"


def _invalid(message: str, alias: str | None) -> ImproperlyConfigured:
    """The error of an invalid option: Django's own for a MAILERS entry."""
    try:
        from django.core.mail import InvalidMailer  # Django 6.1 and later
    except ImportError:
        return ImproperlyConfigured(f"mailpool EmailBackend: {message}")
    return InvalidMailer(message, alias=alias)


def _ids(values: Iterable[Any]) -> frozenset[str]:
    """Account ids from ids or ``EmailAccount`` rows (or a queryset of them)."""
    if isinstance(values, str):
        values = [values]
    return frozenset(str(getattr(value, "pk", value)) for value in values)


def _selector(value: SelectorLike | str | None) -> SelectorLike | None:
    if not isinstance(value, str):
        return value
    if value in _SELECTORS:
        chosen: SelectorLike = _SELECTORS[value]()
        return chosen
    if "." not in value:
        raise ConfigurationError(
            f"unknown selector {value!r}: use one of {', '.join(_SELECTORS)} or "
            "a dotted path to a selector"
        )
    try:
        found = import_string(value)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import the selector {value!r}") from exc
    return found() if isinstance(found, type) else found  # type: ignore[no-any-return]


def _open(option: Storage | str | None, database: str | None) -> Storage:
    if option is None:
        from mailpool.contrib.django.storage import DjangoStorage

        return DjangoStorage(using=database)
    if not isinstance(option, str):
        return option
    with _URL_STORAGES_LOCK:
        storage = _URL_STORAGES.get(option)
        if storage is None:
            storage = _URL_STORAGES[option] = open_storage(option)
        return storage


def _plain_address(value: Any) -> str:
    return parseaddr(force_str(value))[1].casefold()


def _addr_spec(value: Any) -> str:
    """The addr-spec of one recipient, its domain IDNA-encoded for SMTP.

    :raises ConfigurationError: (a ``ValueError``) for anything that is not
        exactly one valid address.
    """
    address = force_str(value)
    parsed = AddressHeader.value_parser(address)
    defects = sorted({str(defect) for defect in parsed.all_defects})
    mailboxes = parsed.all_mailboxes
    problem = "; ".join(defects)
    if not problem and len(mailboxes) != 1:
        problem = "it must be a single address"
    if not problem and not mailboxes[0].domain:
        problem = "mailpool sends only to addresses with a domain (name@domain)"
    if problem:
        raise ConfigurationError(f"Invalid address {address!r}: {problem}")
    mailbox = mailboxes[0]
    domain = mailbox.domain if mailbox.domain.isascii() else punycode(mailbox.domain)
    spec = str(Address(username=mailbox.local_part, domain=domain))
    try:
        check_email(spec)
    except ValueError as exc:
        raise ConfigurationError(f"Invalid address {address!r}: {exc}") from None
    return spec


def _set_envelope(message: StdlibEmailMessage, envelope: Sequence[str]) -> None:
    """Make the message's recipients (To, Cc and a Bcc header, which SMTP
    clients do not transmit) exactly ``envelope``.

    :raises ConfigurationError: when the To or Cc header names an address
        that is not a recipient (a ``To`` header set through ``headers=``),
        which cannot be sent as Django would (to the recipients only).
    """
    shown = Counter(
        address.casefold()
        for name in ("To", "Cc")
        for _, address in getaddresses([str(v) for v in message.get_all(name, [])])
        if address
    )
    wanted = Counter(address.casefold() for address in envelope)
    extra = shown - wanted
    if extra:
        raise ConfigurationError(
            "the To or Cc header names "
            + ", ".join(sorted(extra))
            + ", which are not among the message's recipients (to, cc, bcc): "
            "mailpool sends to the addresses in the headers, so set them as "
            "recipients, or leave the To and Cc headers to Django"
        )
    del message["Bcc"]
    hidden: list[str] = []
    for address in envelope:
        key = address.casefold()
        if shown[key] > 0:
            shown[key] -= 1
        else:
            hidden.append(address)
    if hidden:
        message["Bcc"] = ", ".join(hidden)
