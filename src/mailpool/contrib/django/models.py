"""The app's models: one :class:`EmailAccount` row per sender account.

An :class:`EmailAccount` holds every field of :class:`mailpool.Account`, so the
accounts live in the project's own database and the project's own models can
point at them (``ManyToManyField(EmailAccount)``). :meth:`EmailAccount.to_account`
and :meth:`EmailAccount.from_account` convert between the two.

The usage counters (``sent_count``, ``count_day``, ``last_sent_at``,
``in_flight``, ``lease_until``) belong to the send path: :meth:`EmailAccount.save`
of an existing row never writes them (unless named in ``update_fields``), so
saving an account read a minute ago cannot undo the sends counted since.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction

from mailpool.errors import ConfigurationError
from mailpool.models import (
    USAGE_FIELDS,
    Account,
    AccountStatus,
    OAuth2Credentials,
    SMTPSettings,
)
from mailpool.providers import ConnectionType

__all__ = [
    "MAX_NAME",
    "SETTINGS_FIELDS",
    "USAGE_FIELDS",
    "EmailAccount",
    "EmailAccountTag",
    "check_lengths",
    "choices",
    "from_db",
    "ready_at",
    "to_db",
]

MAX_NAME = 255
"""Characters of an owner, a tag or a host name (``VARCHAR(255)`` columns)."""

SETTINGS_FIELDS = (
    "email",
    "email_key",
    "sender_name",
    "owner",
    "connection_type",
    "status",
    "status_reason",
    "daily_limit",
    "min_wait_time",
    "max_in_flight",
    "timezone",
    "smtp_host",
    "smtp_port",
    "smtp_use_tls",
    "smtp_use_ssl",
    "smtp_username",
    "smtp_password",
    "smtp_allow_insecure_auth",
    "oauth2_enabled",
    "oauth2_access_token",
    "oauth2_refresh_token",
    "oauth2_token_expiry",
    "oauth2_client_id",
    "oauth2_client_secret",
    "oauth2_token_url",
    "oauth2_scope",
)
"""The columns an account's settings live in (what ``save()`` writes)."""


_FAR_FUTURE = datetime(9999, 12, 31, tzinfo=timezone.utc)

# Account field -> model field, for error messages of clean().
_FIELD_OF_PROBLEM = {
    "smtp.host": "smtp_host",
    "smtp.port": "smtp_port",
    "smtp.use_tls": "smtp_use_tls",
    "smtp.use_ssl": "smtp_use_ssl",
    "smtp.username": "smtp_username",
    "smtp.password": "smtp_password",
    "smtp.allow_insecure_auth": "smtp_allow_insecure_auth",
    "smtp": "smtp_host",
    "oauth2.access_token": "oauth2_access_token",
    "oauth2.refresh_token": "oauth2_refresh_token",
    "oauth2.token_expiry": "oauth2_token_expiry",
    "oauth2.client_id": "oauth2_client_id",
    "oauth2.client_secret": "oauth2_client_secret",
    "oauth2.token_url": "oauth2_token_url",
    "oauth2.scope": "oauth2_scope",
    "oauth2": "oauth2_access_token",
}


def _new_id() -> str:
    return uuid.uuid4().hex


def _new_rank() -> float:
    return random.random()


def to_db(value: datetime | None) -> datetime | None:
    """An aware datetime as this project stores it: aware UTC with
    ``USE_TZ = True``, naive UTC without."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    return value if settings.USE_TZ else value.replace(tzinfo=None)


def from_db(value: datetime | None) -> datetime | None:
    """A stored datetime as an aware UTC one (naive ones are UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def ready_at(last_sent_at: datetime | None, min_wait_time: float) -> datetime | None:
    """When the minimum wait after the delivery at ``last_sent_at`` ends (the
    ``ready_at`` column, which lets the database check the wait)."""
    if last_sent_at is None:
        return None
    try:
        return last_sent_at + timedelta(seconds=min_wait_time)
    except OverflowError:
        return _FAR_FUTURE


def check_lengths(account: Account) -> None:
    """Refuse an owner, tag or host name longer than its column.

    :raises ConfigurationError: naming the value.
    """
    values = [("owner", account.owner), ("SMTP host", account.smtp.host)]
    values += [("tag", tag) for tag in account.tags]
    for what, value in values:
        if value is not None and len(value) > MAX_NAME:
            raise ConfigurationError(
                f"an account's {what} is kept in {MAX_NAME} characters: shorten "
                f"{value[:40]!r}..."
            )


def choices(enum_type: type[ConnectionType] | type[AccountStatus]) -> list[Any]:
    """``(value, label)`` pairs of a mailpool enum, for forms."""
    labels = {ConnectionType.SMTP.value: "IMAP/SMTP"}
    return [(m.value, labels.get(m.value, m.value.title())) for m in enum_type]


class EmailAccount(models.Model):
    """One sender mailbox: its SMTP (or OAuth2) login, limits and usage.

    Every field of :class:`mailpool.Account` has a column here (the SMTP and
    OAuth2 settings flattened with ``smtp_`` and ``oauth2_`` prefixes; tags in
    :class:`EmailAccountTag` rows). Secrets are stored as they are: protect the
    database like any credential store.
    """

    id = models.CharField(
        primary_key=True, max_length=64, default=_new_id, editable=False
    )
    email = models.EmailField(max_length=254)
    email_key = models.CharField(
        max_length=254,
        unique=True,
        editable=False,
        help_text="The email address, case-folded: unique.",
    )
    sender_name = models.CharField(max_length=255, blank=True, default="")
    owner = models.CharField(
        max_length=MAX_NAME,
        null=True,
        blank=True,
        help_text="The tenant or company whose pool may use this account.",
    )
    # No ``choices``: mailpool's own rules check the values (see clean()), so
    # a new connection type or status needs no migration.
    connection_type = models.CharField(
        max_length=32,
        default=ConnectionType.SMTP.value,
        help_text="imap/smtp, or a provider: gmail, outlook, yahoo.",
    )
    status = models.CharField(
        max_length=16,
        default=AccountStatus.ACTIVE.value,
        help_text="Only active accounts send.",
    )
    status_reason = models.TextField(
        null=True,
        blank=True,
        help_text="Why the account has its status, e.g. the last login error.",
    )
    daily_limit = models.PositiveIntegerField(
        default=30, help_text="Messages per day at most."
    )
    min_wait_time = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0)],
        help_text="Seconds between two deliveries at least.",
    )
    max_in_flight = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1)],
        help_text="Sends through this account at the same time at most.",
    )
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        help_text="The IANA time zone whose midnight starts a new day's count.",
    )
    smtp_host = models.CharField("SMTP host", max_length=MAX_NAME)
    smtp_port = models.PositiveIntegerField(
        "SMTP port",
        default=587,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
    )
    smtp_use_tls = models.BooleanField(
        "STARTTLS", default=True, help_text="Upgrade with STARTTLS (port 587)."
    )
    smtp_use_ssl = models.BooleanField(
        "implicit TLS", default=False, help_text="TLS from the start (port 465)."
    )
    smtp_username = models.TextField(
        "SMTP username",
        null=True,
        blank=True,
        help_text="The login; the email address when empty.",
    )
    smtp_password = models.TextField("SMTP password", null=True, blank=True)
    smtp_allow_insecure_auth = models.BooleanField(
        "allow login without encryption",
        default=False,
        help_text="Only for a trusted local relay.",
    )
    oauth2_enabled = models.BooleanField(
        "OAuth2", default=False, help_text="Log in with an OAuth2 access token."
    )
    oauth2_access_token = models.TextField("OAuth2 access token", null=True, blank=True)
    oauth2_refresh_token = models.TextField(
        "OAuth2 refresh token", null=True, blank=True
    )
    oauth2_token_expiry = models.DateTimeField(
        "OAuth2 token expiry", null=True, blank=True
    )
    oauth2_client_id = models.TextField(
        "OAuth2 client id",
        null=True,
        blank=True,
        help_text="With a refresh token: the access token is renewed automatically.",
    )
    oauth2_client_secret = models.TextField(
        "OAuth2 client secret", null=True, blank=True
    )
    oauth2_token_url = models.TextField(
        "OAuth2 token URL",
        null=True,
        blank=True,
        help_text="The provider's token endpoint when empty.",
    )
    oauth2_scope = models.TextField(
        "OAuth2 scope",
        null=True,
        blank=True,
        help_text="The provider's SMTP scope when empty.",
    )
    # Usage, owned by the send path (see the module documentation).
    sent_count = models.PositiveIntegerField(default=0, editable=False)
    count_day = models.DateField(
        null=True, editable=False, help_text="The day sent_count counts."
    )
    last_sent_at = models.DateTimeField(null=True, editable=False)
    in_flight = models.PositiveIntegerField(default=0, editable=False)
    lease_until = models.DateTimeField(null=True, editable=False)
    paused_until = models.DateTimeField(
        null=True,
        editable=False,
        help_text="Held back after a quota or throttling reply.",
    )
    pause_kind = models.CharField(max_length=16, null=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    last_error = models.TextField(null=True, editable=False)
    last_error_at = models.DateTimeField(null=True, editable=False)
    # Derived, for the database's own eligibility checks and picks.
    ready_at = models.DateTimeField(
        null=True, editable=False, help_text="last_sent_at + min_wait_time."
    )
    rank = models.FloatField(
        default=_new_rank,
        editable=False,
        help_text="A random position: the order of random picks.",
    )

    class Meta:
        verbose_name = "email account"
        verbose_name_plural = "email accounts"
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["status", "rank"], name="mailpool_acct_random"),
            models.Index(
                fields=["owner", "status", "rank"], name="mailpool_acct_owner_random"
            ),
            models.Index(
                fields=["status", "lease_until", "id"], name="mailpool_acct_turn"
            ),
            models.Index(
                fields=["owner", "status", "lease_until", "id"],
                name="mailpool_acct_owner_turn",
            ),
            models.Index(fields=["timezone"], name="mailpool_acct_timezone"),
        ]

    def __str__(self) -> str:
        return str(self.email)

    def __repr__(self) -> str:
        return f"<EmailAccount {self.pk}: {self.email}>"

    # -- tags -------------------------------------------------------------------

    @property
    def tags(self) -> list[str]:
        """The account's tags, sorted (reads them unless prefetched)."""
        if self._state.adding:
            return sorted(getattr(self, "_pending_tags", ()))
        return sorted(row.tag for row in self.tag_set.all())

    def set_tags(self, tags: Iterable[str]) -> None:
        """Replace the stored tags of a saved account."""
        wanted = {str(tag) for tag in tags}
        using = self._state.db or "default"
        with transaction.atomic(using=using):
            rows = EmailAccountTag.objects.using(using).filter(account=self)
            rows.exclude(tag__in=wanted).delete()
            have = set(rows.values_list("tag", flat=True))
            EmailAccountTag.objects.using(using).bulk_create(
                [
                    EmailAccountTag(account=self, tag=tag)
                    for tag in sorted(wanted - have)
                ]
            )
        if hasattr(self, "_prefetched_objects_cache"):
            self._prefetched_objects_cache.pop("tag_set", None)

    # -- usage ------------------------------------------------------------------

    @property
    def sent_today(self) -> int:
        """Sends counted today, in the account's time zone."""
        try:
            return self.to_account(()).sent_today(datetime.now(timezone.utc))
        except ConfigurationError:
            return int(self.sent_count)

    # -- conversion -------------------------------------------------------------

    def to_account(self, tags: Iterable[str] | None = None) -> Account:
        """This row as a :class:`mailpool.Account` (``tags``: its tags, read
        from the database when not given).

        :raises ConfigurationError: when the row holds invalid settings.
        """
        oauth2 = None
        if self.oauth2_enabled:
            oauth2 = OAuth2Credentials(
                access_token=self.oauth2_access_token,
                refresh_token=self.oauth2_refresh_token,
                token_expiry=from_db(self.oauth2_token_expiry),
                client_id=self.oauth2_client_id or None,
                client_secret=self.oauth2_client_secret or None,
                token_url=self.oauth2_token_url or None,
                scope=self.oauth2_scope or None,
            )
        return Account(
            id=self.pk,
            email=self.email,
            sender_name=self.sender_name or "",
            owner=self.owner or None,
            tags=frozenset(self.tags if tags is None else tags),
            connection_type=self.connection_type,
            status=self.status,
            status_reason=self.status_reason or None,
            daily_limit=self.daily_limit,
            min_wait_time=self.min_wait_time,
            max_in_flight=self.max_in_flight,
            timezone=self.timezone or "UTC",
            smtp=SMTPSettings(
                host=self.smtp_host,
                port=self.smtp_port,
                use_tls=self.smtp_use_tls,
                use_ssl=self.smtp_use_ssl,
                username=self.smtp_username or None,
                password=self.smtp_password or None,
                allow_insecure_auth=self.smtp_allow_insecure_auth,
            ),
            oauth2=oauth2,
            sent_count=self.sent_count,
            count_day=self.count_day,
            last_sent_at=from_db(self.last_sent_at),
            in_flight=self.in_flight,
            lease_until=from_db(self.lease_until),
            paused_until=from_db(self.paused_until),
            pause_kind=self.pause_kind or None,
            consecutive_failures=self.consecutive_failures,
            last_error=self.last_error or None,
            last_error_at=from_db(self.last_error_at),
        )

    def apply_settings(self, account: Account) -> None:
        """Copy ``account``'s settings (not its id, tags or usage) onto this row."""
        smtp = account.smtp
        oauth2 = account.oauth2 or OAuth2Credentials()
        self.email = account.email
        self.email_key = account.email.casefold()
        self.sender_name = account.sender_name
        self.owner = account.owner
        self.connection_type = account.connection_type.value
        self.status = account.status.value
        self.status_reason = account.status_reason
        self.daily_limit = account.daily_limit
        self.min_wait_time = account.min_wait_time
        self.max_in_flight = account.max_in_flight
        self.timezone = account.timezone
        self.smtp_host = smtp.host
        self.smtp_port = smtp.port
        self.smtp_use_tls = smtp.use_tls
        self.smtp_use_ssl = smtp.use_ssl
        self.smtp_username = smtp.username
        self.smtp_password = _secret(smtp.password)
        self.smtp_allow_insecure_auth = smtp.allow_insecure_auth
        self.oauth2_enabled = account.oauth2 is not None
        self.oauth2_access_token = _secret(oauth2.access_token)
        self.oauth2_refresh_token = _secret(oauth2.refresh_token)
        self.oauth2_token_expiry = to_db(oauth2.token_expiry)
        self.oauth2_client_id = oauth2.client_id
        self.oauth2_client_secret = _secret(oauth2.client_secret)
        self.oauth2_token_url = oauth2.token_url
        self.oauth2_scope = oauth2.scope

    def apply_usage(self, account: Account) -> None:
        """Copy ``account``'s usage counters onto this row."""
        self.sent_count = account.sent_count
        self.count_day = account.count_day
        self.last_sent_at = to_db(account.last_sent_at)
        self.in_flight = account.in_flight
        self.lease_until = to_db(account.lease_until)
        self.paused_until = to_db(account.paused_until)
        self.pause_kind = (
            None if account.pause_kind is None else account.pause_kind.value
        )
        self.consecutive_failures = account.consecutive_failures
        self.last_error = account.last_error
        self.last_error_at = to_db(account.last_error_at)
        self.ready_at = to_db(ready_at(account.last_sent_at, account.min_wait_time))

    @classmethod
    def from_account(cls, account: Account) -> EmailAccount:
        """A new, unsaved row holding ``account`` (its usage included; its
        tags are stored by ``save()``)."""
        row = cls(id=account.id)
        row.apply_settings(account)
        row.apply_usage(account)
        row._pending_tags = sorted(account.tags)
        return row

    # -- validation and saving --------------------------------------------------

    def clean(self) -> None:
        """Check the row with mailpool's own rules (those of ``Account``)."""
        super().clean()
        if not self.smtp_host:
            return  # reported as a missing field already
        try:
            self.to_account(tags=())
        except ConfigurationError as exc:
            raise ValidationError(_validation_messages(exc)) from None

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save the row. An existing row's save writes its settings only,
        never the usage counters (unless ``update_fields`` names them); a new
        row stores everything, its tags from :meth:`from_account` included."""
        self.email = str(self.email).strip()
        self.email_key = self.email.casefold()
        using = kwargs.get("using") or self._state.db or "default"
        if self._state.adding:
            self.ready_at = to_db(
                ready_at(from_db(self.last_sent_at), float(self.min_wait_time))
            )
            pending = getattr(self, "_pending_tags", None)
            with transaction.atomic(using=using):
                super().save(*args, **kwargs)
                if pending:
                    self.set_tags(pending)
            self.__dict__.pop("_pending_tags", None)
            return
        if kwargs.get("update_fields") is None:
            kwargs["update_fields"] = SETTINGS_FIELDS
        fields = set(kwargs["update_fields"])
        with transaction.atomic(using=using):
            super().save(*args, **kwargs)
            if fields & {"min_wait_time", "last_sent_at"}:
                refresh_ready_at(self.pk, using)


class EmailAccountTag(models.Model):
    """One tag of an account (e.g. the campaign it is assigned to)."""

    account = models.ForeignKey(
        EmailAccount, on_delete=models.CASCADE, related_name="tag_set"
    )
    tag = models.CharField(max_length=MAX_NAME)

    class Meta:
        verbose_name = "tag"
        constraints: ClassVar[list[models.UniqueConstraint]] = [
            models.UniqueConstraint(
                fields=["account", "tag"], name="mailpool_account_tag_unique"
            )
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["tag", "account"], name="mailpool_tag_lookup")
        ]

    def __str__(self) -> str:
        return str(self.tag)


def refresh_ready_at(account_id: str, using: str) -> None:
    """Recompute the ``ready_at`` column of one account from the stored
    ``last_sent_at`` and ``min_wait_time`` (call it inside the transaction
    that changed them, after the write that locked the row)."""
    rows = EmailAccount.objects.using(using).filter(pk=account_id)
    stored = rows.values_list("last_sent_at", "min_wait_time").first()
    if stored is not None:
        last, wait = stored
        rows.update(ready_at=to_db(ready_at(from_db(last), float(wait))))


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def _validation_messages(error: ConfigurationError) -> dict[str, list[str]] | str:
    """mailpool's problems by model field (for forms), or the message."""
    if not error.problems:
        return str(error)
    found: dict[str, list[str]] = {}
    for where, text in error.problems:
        field = _FIELD_OF_PROBLEM.get(where, where)
        if field not in SETTINGS_FIELDS:
            field = "__all__"
        found.setdefault(field, []).append(text)
    return found
