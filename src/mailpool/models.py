"""The data mailpool works with: accounts, their settings, and results.

All models are immutable pydantic v2 models. Build a changed copy with
:meth:`Account.replace`, which validates the change. Invalid input raises
:class:`~mailpool.ConfigurationError` (a ``ValueError``) with one sentence per
problem; secrets are :class:`pydantic.SecretStr` and never appear in ``repr``.
"""

from __future__ import annotations

import enum
import math
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from mailpool._validation import check_email, check_header_value, describe, problems
from mailpool.errors import ConfigurationError
from mailpool.providers import PROVIDERS, ConnectionType, ProviderPreset

__all__ = [
    "Account",
    "AccountStatus",
    "AccountUsage",
    "ConnectionTestResult",
    "OAuth2Credentials",
    "SMTPSettings",
    "SendResult",
]


def _new_id() -> str:
    return uuid.uuid4().hex


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class _Model(BaseModel):
    """Frozen, strict about unknown fields, and raising ConfigurationError."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
            return
        except ValidationError as exc:
            found = problems(exc)
        # Raised outside the except block on purpose: the ValidationError keeps
        # the raw input (passwords included) in errors(), so it must not be
        # reachable as __cause__ or __context__.
        raise ConfigurationError(describe(type(self).__name__, found), problems=found)


class AccountStatus(str, enum.Enum):
    """Whether an account may send. Only ``active`` accounts are chosen."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    ERROR = "error"
    PENDING = "pending"


class SMTPSettings(_Model):
    """How to reach and log in to an account's SMTP server.

    ``use_tls`` upgrades with STARTTLS (port 587); ``use_ssl`` is implicit TLS
    (port 465); never both. Credentials are optional (a local relay may need
    none), but a password is only sent over an encrypted connection unless
    ``allow_insecure_auth`` says the plaintext link is trusted.
    """

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    use_tls: bool = True
    use_ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    allow_insecure_auth: bool = False

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        value = value.strip()
        if not value or any(char.isspace() for char in value):
            raise ValueError("host must be a host name or IP address without spaces")
        return value

    @field_validator("username")
    @classmethod
    def _check_username(cls, value: str | None) -> str | None:
        return None if value is None else check_header_value("username", value)

    @model_validator(mode="after")
    def _check_security(self) -> SMTPSettings:
        if self.use_tls and self.use_ssl:
            raise ValueError(
                "use_tls (STARTTLS, usually port 587) and use_ssl (implicit TLS, "
                "usually port 465) exclude each other: set only one"
            )
        if self.password is not None:
            self.check_auth_allowed("a password")
        return self

    @property
    def encrypted(self) -> bool:
        """True when the connection is protected by STARTTLS or implicit TLS."""
        return self.use_tls or self.use_ssl

    def check_auth_allowed(self, what: str) -> None:
        """Refuse credentials over plaintext unless the user opted in."""
        if not self.encrypted and not self.allow_insecure_auth:
            raise ValueError(
                f"{what} would travel unencrypted to {self.host}:{self.port}: set "
                "use_tls=True or use_ssl=True, or allow_insecure_auth=True for a "
                "trusted local relay"
            )


def _preset_settings(preset: ProviderPreset, **credentials: Any) -> SMTPSettings:
    return SMTPSettings(
        host=preset.host,
        port=preset.port,
        use_tls=preset.use_tls,
        use_ssl=preset.use_ssl,
        **credentials,
    )


class OAuth2Credentials(_Model):
    """OAuth2 tokens for SMTP ``AUTH XOAUTH2`` (Gmail, Outlook)."""

    access_token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    token_expiry: datetime | None = None

    @field_validator("token_expiry")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value)


class Account(_Model):
    """One sender mailbox with its credentials, limits and usage today.

    ``sent_count`` counts the sends of ``count_day`` (a day in the pool's time
    zone); a count from an earlier day reads as 0, so counts reset by themselves.
    The usage fields are owned by the storage: :meth:`Storage.update` keeps them.
    """

    id: str = Field(default_factory=_new_id, min_length=1, max_length=64)
    email: str
    sender_name: str = ""
    owner: str | None = None
    tags: frozenset[str] = frozenset()
    connection_type: ConnectionType = ConnectionType.SMTP
    status: AccountStatus = AccountStatus.ACTIVE
    status_reason: str | None = None
    daily_limit: int = Field(default=30, ge=0)
    min_wait_time: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    smtp: SMTPSettings
    oauth2: OAuth2Credentials | None = None
    sent_count: int = Field(default=0, ge=0)
    count_day: date | None = None
    last_sent_at: datetime | None = None

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str) -> str:
        return check_email(value)

    @field_validator("sender_name")
    @classmethod
    def _check_sender_name(cls, value: str) -> str:
        return check_header_value("sender_name", value)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not value.isprintable() or value.strip() != value:
            raise ValueError("id must be printable, without surrounding spaces")
        return value

    @field_validator("last_sent_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value)

    @model_validator(mode="before")
    @classmethod
    def _provider_defaults(cls, data: Any) -> Any:
        """Without ``smtp``, a provider connection type brings its server."""
        if isinstance(data, dict) and data.get("smtp") is None:
            kind = data.get("connection_type")
            for preset in PROVIDERS.values():
                if kind != ConnectionType.SMTP and preset.connection_type == kind:
                    return {**data, "smtp": _preset_settings(preset)}
        return data

    @model_validator(mode="after")
    def _check_token_transport(self) -> Account:
        if self.oauth2 is not None and self.oauth2.access_token is not None:
            self.smtp.check_auth_allowed("an OAuth2 access token")
        return self

    @classmethod
    def for_provider(
        cls,
        provider: str,
        *,
        email: str,
        password: str | None = None,
        username: str | None = None,
        **fields: Any,
    ) -> Account:
        """Build an account on a preset from :data:`~mailpool.PROVIDERS`.

        :param provider: ``"gmail"``, ``"outlook"``, ``"yahoo"`` or ``"zoho"``.
        :param password: the app password; omit it for OAuth2 (pass ``oauth2=``).
        :param username: the SMTP login, the email address by default.
        :raises ConfigurationError: for an unknown provider or invalid fields.
        """
        preset = PROVIDERS.get(provider.lower())
        if preset is None:
            known = ", ".join(sorted(PROVIDERS))
            raise ConfigurationError(
                f"unknown provider {provider!r}: use one of {known}, or build "
                "SMTPSettings yourself"
            )
        smtp = _preset_settings(preset, username=username or email, password=password)
        fields.setdefault("connection_type", preset.connection_type)
        return cls(email=email, smtp=smtp, **fields)

    def replace(self, **changes: Any) -> Account:
        """Return a validated copy with ``changes`` applied.

        :raises ConfigurationError: when the result would be invalid.
        """
        data = {name: getattr(self, name) for name in type(self).model_fields}
        data.update(changes)
        return type(self)(**data)

    def sent_on(self, day: date) -> int:
        """Sends counted for ``day``: 0 when the stored count is from another day."""
        return self.sent_count if self.count_day == day else 0

    def remaining_on(self, day: date) -> int:
        """How many more sends the daily limit allows on ``day``."""
        return max(self.daily_limit - self.sent_on(day), 0)

    def wait_left(self, now: datetime) -> float:
        """Seconds left of the minimum wait since the last send (0 when none)."""
        if self.last_sent_at is None or self.min_wait_time <= 0:
            return 0.0
        elapsed = (now - self.last_sent_at).total_seconds()
        return max(self.min_wait_time - elapsed, 0.0)

    def is_eligible(self, now: datetime) -> bool:
        """Active, under its daily limit on ``now``'s day, and its wait elapsed."""
        return (
            self.status is AccountStatus.ACTIVE
            and self.remaining_on(now.date()) > 0
            and self.wait_left(now) <= 0
        )

    def as_of(self, day: date) -> Account:
        """This account with its count rolled over to ``day`` (a count from an
        earlier day reads as 0)."""
        if self.count_day == day:
            return self
        return self.model_copy(update={"sent_count": 0, "count_day": day})

    def with_send(self, now: datetime) -> Account:
        """This account with one more send counted at ``now``."""
        day = now.date()
        stamp = _as_utc(now)
        if self.last_sent_at is not None and stamp is not None:
            # Never move the stamp back (another worker's clock may run ahead).
            stamp = max(stamp, self.last_sent_at)
        return self.model_copy(
            update={
                "sent_count": self.sent_on(day) + 1,
                "count_day": day,
                "last_sent_at": stamp,
            }
        )


def seconds_until_next_day(now: datetime) -> float:
    """Seconds from ``now`` to the next midnight in ``now``'s time zone."""
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
    next_day = midnight.replace(tzinfo=now.tzinfo)
    elapsed = next_day.astimezone(timezone.utc) - now.astimezone(timezone.utc)
    return max(math.ceil(elapsed.total_seconds()), 0)


class SendResult(_Model):
    """What :meth:`AccountPool.send` did."""

    account_id: str
    account_email: str
    message_id: str
    sent_at: datetime
    attempts: int = Field(ge=1)
    """SMTP attempts over all accounts tried, retries included."""
    refused_recipients: tuple[str, ...] = ()
    """Recipients the server refused while accepting the others."""


class ConnectionTestResult(_Model):
    """Outcome of :meth:`AccountPool.test_connection`."""

    account_id: str
    account_email: str
    success: bool
    message: str = Field(min_length=1)
    """A sentence for a person; never holds a secret."""


class AccountUsage(NamedTuple):
    """One row of :meth:`AccountPool.usage`."""

    account: Account
    sent_today: int
    remaining: int
