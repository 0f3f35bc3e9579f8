"""The data mailpool works with: accounts, their settings, and results.

All models are immutable pydantic v2 models. Build a changed copy with
:meth:`Account.replace`, which validates the change. Invalid input raises
:class:`~mailpool.ConfigurationError` (a ``ValueError``) with one sentence per
problem; secrets are :class:`pydantic.SecretStr` and never appear in ``repr``.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import math
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailpool._fields import Secret, Tags
from mailpool._validation import check_email, check_header_value, describe, problems
from mailpool.errors import ConfigurationError
from mailpool.providers import PROVIDERS, ConnectionType, ProviderPreset

__all__ = [
    "Account",
    "AccountExplanation",
    "AccountStatus",
    "AccountUsage",
    "ConnectionTestResult",
    "Failure",
    "FailureKind",
    "OAuth2Credentials",
    "PauseKind",
    "SMTPSettings",
    "SendResult",
]


MAX_COUNT = 2**31 - 1
"""The largest daily limit or count: what every database's INTEGER holds."""
MAX_WAIT = 7 * 24 * 3600.0
"""The longest ``min_wait_time``: a week."""
MAX_IN_FLIGHT = 1000
"""The most sends of one account in flight at once."""
HEALTH_FIELDS = (
    "paused_until",
    "pause_kind",
    "consecutive_failures",
    "last_error",
    "last_error_at",
)
"""The fields of an account's health (see :meth:`Account.with_failure`)."""
USAGE_FIELDS = (
    "sent_count",
    "count_day",
    "last_sent_at",
    "in_flight",
    "lease_until",
    *HEALTH_FIELDS,
)
"""The fields owned by the send path (usage counters, lease and health):
:meth:`Storage.update` keeps them as stored."""


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


class PauseKind(str, enum.Enum):
    """Why an account is paused until :attr:`Account.paused_until`.

    .. versionadded:: 0.2
    """

    QUOTA = "quota"
    """Held at its provider's sending quota until its next daily reset."""
    THROTTLED = "throttled"
    """Cooling down after the provider asked it to slow down."""


class FailureKind(str, enum.Enum):
    """What a failed send says about its account, or how a probe of
    :meth:`AccountPool.revive` ended (see :class:`Failure`).

    .. versionadded:: 0.2
    """

    TRANSIENT = "transient"
    """Connect, TLS or transient reply failures: counted; too many in a row
    set the status to ``error``."""
    THROTTLED = "throttled"
    """The provider throttles the account: it cools down."""
    QUOTA = "quota"
    """The provider's quota is reached: held at the cap until the next reset."""
    BROKEN = "broken"
    """The account cannot send as configured: status ``error`` at once."""
    PROBE_FAILED = "probe_failed"
    """A revive probe failed: one more failure counted (the backoff of the
    next probe doubles)."""
    REVIVED = "revived"
    """A revive probe passed: the account is ``active`` again."""


@dataclass(frozen=True)
class Failure:
    """A failure of one account, as :meth:`Storage.record_failure` stores it
    (by the rule of :meth:`Account.with_failure`).

    :param kind: what it says about the account.
    :param reason: a sentence for a person (never a secret).
    :param at: when it happened (aware).
    :param cool_down: seconds a ``throttled`` account pauses (0 to a week).
    :param max_failures: consecutive ``transient`` failures that set the
        status to ``error`` (0: never).
    :raises ConfigurationError: for an unknown kind, a time that is not a
        datetime (or too close to the end of the calendar to pause from), an
        impossible ``cool_down`` or ``max_failures``.

    The reason is stored as given but for what no storage can hold: NUL and
    other control characters (line breaks and tabs excepted) become spaces,
    characters that are not valid Unicode become ``?``, and an empty reason
    reads ``unknown failure``.

    .. versionadded:: 0.2
    """

    kind: FailureKind
    reason: str
    at: datetime
    cool_down: float = 300.0
    max_failures: int = 5

    def __post_init__(self) -> None:
        try:
            kind = FailureKind(self.kind)
        except ValueError:
            raise ConfigurationError(
                f"Failure kind must be one of {', '.join(k.value for k in FailureKind)}"
                f" (got {self.kind!r})"
            ) from None
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "reason", clean_reason(self.reason))
        if not isinstance(self.at, datetime):
            raise ConfigurationError(f"Failure at must be a datetime (got {self.at!r})")
        try:
            self.at + timedelta(days=2, seconds=MAX_WAIT)  # the longest pause
        except OverflowError:
            raise ConfigurationError(
                f"Failure at is too close to the end of the calendar: {self.at}"
            ) from None
        cool_down = self.cool_down
        if (
            isinstance(cool_down, bool)
            or not isinstance(cool_down, (int, float))
            or not 0 <= cool_down <= MAX_WAIT
        ):
            raise ConfigurationError(
                "Failure cool_down must be a number of seconds between 0 and a "
                f"week (got {cool_down!r})"
            )
        failures = self.max_failures
        if isinstance(failures, bool) or not isinstance(failures, int):
            raise ConfigurationError(
                f"Failure max_failures must be a whole number (got {failures!r})"
            )
        if not 0 <= failures <= MAX_COUNT:
            raise ConfigurationError(
                f"Failure max_failures must be between 0 and {MAX_COUNT} "
                f"(got {failures!r})"
            )


_UNSTORABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_reason(reason: object) -> str:
    """``reason`` as every storage can hold it (see :class:`Failure`)."""
    text = reason if isinstance(reason, str) else str(reason)
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = _UNSTORABLE.sub(" ", text)
    return text if text.strip() else "unknown failure"


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
    password: Secret = None  # type: ignore[assignment]  # str accepted: _fields.py
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


def _check_token_url(value: str | None) -> str | None:
    """An ``https://`` URL, or ``http://`` on a loopback address (for tests)."""
    if value is None:
        return None
    value = value.strip()
    try:
        parts = urllib.parse.urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
    if not host or parts.scheme not in ("https", "http") or parts.username:
        raise ValueError(
            "token_url must be an https:// URL without credentials in it, "
            "e.g. https://oauth2.googleapis.com/token"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(
            f"token_url {value!r} is plain http://, which would send the refresh "
            "token and client secret unencrypted: use https:// (http:// is "
            "accepted only on a loopback address, for tests)"
        )
    return value


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OAuth2Credentials(_Model):
    """OAuth2 tokens for SMTP ``AUTH XOAUTH2`` (Gmail, Microsoft 365).

    With a ``refresh_token`` and a ``client_id``, the access token is renewed
    automatically shortly before ``token_expiry`` (and when the server refuses
    it); the new tokens are saved through the pool's storage. ``token_url``
    and ``scope`` default to the provider's (from ``connection_type``).

    .. versionchanged:: 0.2
       ``client_id``, ``client_secret``, ``token_url`` and ``scope``.
    """

    access_token: Secret = None  # type: ignore[assignment]  # see _fields.py
    refresh_token: Secret = None  # type: ignore[assignment]
    token_expiry: datetime | None = None
    client_id: str | None = None
    client_secret: Secret = None  # type: ignore[assignment]
    token_url: str | None = None
    scope: str | None = None

    @field_validator("token_expiry")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value)

    @field_validator("token_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return _check_token_url(value)

    @field_validator("client_id", "scope")
    @classmethod
    def _check_text(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or not value.isprintable():
            raise ValueError(f"{info.field_name} must be printable text, not empty")
        return value


class Account(_Model):
    """One sender mailbox with its credentials, limits and usage today.

    ``sent_count`` counts the sends of ``count_day`` (a day in the pool's time
    zone); a count from an earlier day reads as 0, so counts reset by themselves.
    ``last_sent_at`` is when the latest delivery ended (``min_wait_time`` counts
    from there); ``in_flight`` sends hold a lease that ends by ``lease_until``.
    ``paused_until`` (with ``pause_kind``) holds the account back after a
    quota or throttling reply; ``consecutive_failures``, ``last_error`` and
    ``last_error_at`` are its health (see docs/replies.md).
    The usage fields are owned by the storage: :meth:`Storage.update` keeps them.

    .. versionchanged:: 0.2
       ``paused_until``, ``pause_kind``, ``consecutive_failures``,
       ``last_error`` and ``last_error_at``.
    """

    id: str = Field(default_factory=_new_id, min_length=1, max_length=64)
    email: str
    sender_name: str = ""
    owner: str | None = None
    tags: Tags = frozenset()  # type: ignore[assignment]  # any set: _fields.py
    connection_type: ConnectionType = ConnectionType.SMTP
    status: AccountStatus = AccountStatus.ACTIVE
    status_reason: str | None = None
    daily_limit: int = Field(default=30, ge=0, le=MAX_COUNT)
    min_wait_time: float = Field(default=1.0, ge=0, le=MAX_WAIT, allow_inf_nan=False)
    max_in_flight: int = Field(default=1, ge=1, le=MAX_IN_FLIGHT)
    timezone: str = "UTC"
    smtp: SMTPSettings
    oauth2: OAuth2Credentials | None = None
    sent_count: int = Field(default=0, ge=0, le=MAX_COUNT)
    count_day: date | None = None
    last_sent_at: datetime | None = None
    in_flight: int = Field(default=0, ge=0, le=MAX_COUNT)
    lease_until: datetime | None = None
    paused_until: datetime | None = None
    pause_kind: PauseKind | None = None
    consecutive_failures: int = Field(default=0, ge=0, le=MAX_COUNT)
    last_error: str | None = None
    last_error_at: datetime | None = None

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str) -> str:
        return check_email(value)

    @field_validator("sender_name")
    @classmethod
    def _check_sender_name(cls, value: str) -> str:
        return check_header_value("sender_name", value)

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        zone_of(value)
        return value

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not value.isprintable() or value.strip() != value:
            raise ValueError("id must be printable, without surrounding spaces")
        return value

    @field_validator("last_sent_at", "lease_until", "paused_until", "last_error_at")
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
        if self.oauth2 is not None and (
            self.oauth2.access_token is not None
            or self.oauth2.refresh_token is not None
        ):
            self.smtp.check_auth_allowed("an OAuth2 token")
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

    def local_day(self, now: datetime) -> date:
        """The date of ``now`` in the account's :attr:`timezone`: the day a
        send at ``now`` counts on (or the stored :attr:`count_day`, if that
        is later: a caller whose clock is behind never restarts a day)."""
        return now.astimezone(zone_of(self.timezone)).date()

    def sent_on(self, day: date) -> int:
        """Sends counted for ``day``: 0 when the stored count is from an
        earlier day. A count stored for a later day still counts: it is the
        current one, seen from a clock that is behind."""
        if self.count_day is not None and self.count_day >= day:
            return self.sent_count
        return 0

    def remaining_on(self, day: date) -> int:
        """How many more sends the daily limit allows on ``day``."""
        return max(self.daily_limit - self.sent_on(day), 0)

    def sent_today(self, now: datetime) -> int:
        """Sends counted for the account's day at ``now``."""
        return self.sent_on(self.local_day(now))

    def remaining_today(self, now: datetime) -> int:
        """How many more sends the daily limit allows at ``now``."""
        return self.remaining_on(self.local_day(now))

    def seconds_to_reset(self, now: datetime) -> float:
        """Seconds from ``now`` until the count rolls over: the next midnight
        in the account's time zone after the day being counted."""
        day = max(self.local_day(now), self.count_day or date.min)
        zone = zone_of(self.timezone)
        midnight = datetime.combine(day + timedelta(days=1), datetime.min.time())
        elapsed = midnight.replace(tzinfo=zone).astimezone(timezone.utc) - now
        return max(math.ceil(elapsed.total_seconds()), 0)

    def wait_left(self, now: datetime) -> float:
        """Seconds left of the minimum wait since the last delivery (0 when none)."""
        if self.last_sent_at is None or self.min_wait_time <= 0:
            return 0.0
        elapsed = (now - self.last_sent_at).total_seconds()
        return max(self.min_wait_time - elapsed, 0.0)

    def leases_expired(self, now: datetime) -> bool:
        """True when every lease taken on this account has run out by ``now``
        (or none was ever taken): a worker that died holds no slot."""
        return self.lease_until is None or self.lease_until <= now

    def busy_left(self, now: datetime) -> float:
        """Seconds until a send slot frees up by expiry (0 when one is free).

        A slot usually frees up sooner, when a send in flight completes."""
        if self.in_flight < self.max_in_flight or self.leases_expired(now):
            return 0.0
        assert self.lease_until is not None
        return (self.lease_until - now).total_seconds()

    def pause_left(self, now: datetime) -> float:
        """Seconds until the pause of a quota or throttling reply ends (0
        when there is none)."""
        if self.paused_until is None:
            return 0.0
        return max((self.paused_until - now).total_seconds(), 0.0)

    def is_eligible(self, now: datetime) -> bool:
        """Active, under its daily limit on ``now``'s day, not paused, its
        wait elapsed and a send slot free (fewer than ``max_in_flight`` sends
        in flight)."""
        return (
            self.status is AccountStatus.ACTIVE
            and self.remaining_today(now) > 0
            and self.pause_left(now) <= 0
            and self.wait_left(now) <= 0
            and self.busy_left(now) <= 0
        )

    def with_failure(self, failure: Failure) -> Account:
        """This account after ``failure`` (the rule every storage applies; see
        :meth:`Storage.record_failure`):

        - the last error and its time are stored;
        - ``quota``: paused until its next daily reset;
        - ``throttled``: paused for ``cool_down`` seconds (a longer pause
          already stored is kept);
        - ``broken``: status ``error`` with the reason, at once;
        - ``transient``: one more consecutive failure; at ``max_failures``
          the status becomes ``error`` (and the count starts again).

        Only an ``active`` account changes status.

        The two outcomes of a revive probe apply only to an account that
        :attr:`revivable` says is still in the ``error`` mailpool set
        (otherwise nothing changes: someone changed it meanwhile):

        - ``probe_failed``: the last error (and the status reason, so that
          it stays revivable) is the probe's, one more failure is counted;
        - ``revived``: status ``active``, no reason, the count starts again.

        .. versionadded:: 0.2
        """
        at = _as_utc(failure.at)
        assert at is not None
        if failure.kind in (FailureKind.PROBE_FAILED, FailureKind.REVIVED):
            return self._probed(failure, at)
        changes: dict[str, Any] = {"last_error": failure.reason, "last_error_at": at}
        until: datetime | None = None
        if failure.kind is FailureKind.QUOTA:
            until = at + timedelta(seconds=self.seconds_to_reset(at))
        elif failure.kind is FailureKind.THROTTLED:
            until = at + timedelta(seconds=max(failure.cool_down, 0.0))
        if until is not None and (
            self.paused_until is None or until > self.paused_until
        ):
            changes["paused_until"] = until
            changes["pause_kind"] = PauseKind(failure.kind.value)
        active = self.status is AccountStatus.ACTIVE
        if failure.kind is FailureKind.BROKEN and active:
            changes.update(
                status=AccountStatus.ERROR,
                status_reason=failure.reason,
                consecutive_failures=0,
            )
        elif failure.kind is FailureKind.TRANSIENT:
            count = min(self.consecutive_failures + 1, MAX_COUNT)
            if active and 0 < failure.max_failures <= count:
                reason = f"{count} failures in a row; the last: {failure.reason}"
                changes.update(
                    status=AccountStatus.ERROR,
                    status_reason=reason,
                    last_error=reason,
                    consecutive_failures=0,
                )
            else:
                changes["consecutive_failures"] = count
        if self.revivable and changes.get("status", self.status) is AccountStatus.ERROR:
            # A failure of a send still in flight when mailpool set the error:
            # the error stays the one mailpool set (and revivable).
            changes["status_reason"] = changes["last_error"]
        return self.model_copy(update=changes)

    @property
    def revivable(self) -> bool:
        """In ``error`` as mailpool set it after a failure, and unchanged
        since: its ``status_reason`` is still its ``last_error``. Only such
        accounts are probed by :meth:`AccountPool.revive` (an account set to
        ``error`` by hand, with another reason or none, is not).

        .. versionadded:: 0.2
        """
        return (
            self.status is AccountStatus.ERROR
            and self.last_error_at is not None
            and self.status_reason is not None
            and self.status_reason == self.last_error
        )

    def _probed(self, failure: Failure, at: datetime) -> Account:
        if not self.revivable:
            return self
        if failure.kind is FailureKind.REVIVED:
            return self.model_copy(
                update={
                    "status": AccountStatus.ACTIVE,
                    "status_reason": None,
                    "consecutive_failures": 0,
                }
            )
        return self.model_copy(
            update={
                "status_reason": failure.reason,
                "last_error": failure.reason,
                "last_error_at": at,
                "consecutive_failures": min(self.consecutive_failures + 1, MAX_COUNT),
            }
        )

    def as_of(self, day: date) -> Account:
        """This account with its count rolled over to ``day`` (a count from an
        earlier day reads as 0; a later stored day is kept)."""
        if self.count_day is not None and self.count_day >= day:
            return self
        return self.model_copy(update={"sent_count": 0, "count_day": day})

    def with_claim(self, now: datetime, lease_until: datetime) -> Account:
        """This account with one more send counted on ``now``'s day and one
        more lease in flight, ending by ``lease_until`` (the rule every
        storage applies; see :meth:`Storage.claim`)."""
        day = max(self.local_day(now), self.count_day or date.min)
        in_flight = 0 if self.leases_expired(now) else self.in_flight
        until = _as_utc(lease_until)
        if self.lease_until is not None and until is not None:
            until = max(until, self.lease_until)
        return self.model_copy(
            update={
                "sent_count": self.sent_on(day) + 1,
                "count_day": day,
                "in_flight": in_flight + 1,
                "lease_until": until,
            }
        )

    def with_lease_ended(
        self, lease_expires_at: datetime, now: datetime, *, delivered: bool, day: date
    ) -> Account:
        """This account after a lease ends: the slot is freed (unless the lease
        had run out, when it may already have been reused), and either the
        delivery time is stamped (``delivered``) or the unit counted on ``day``
        is given back. Stamps never move back in time. A delivery ends a run
        of consecutive failures."""
        changes: dict[str, Any] = {}
        if now < lease_expires_at and self.in_flight > 0:
            changes["in_flight"] = self.in_flight - 1
        if delivered and self.consecutive_failures:
            changes["consecutive_failures"] = 0
        if delivered:
            stamp = _as_utc(now)
            if self.last_sent_at is None or (stamp and stamp > self.last_sent_at):
                changes["last_sent_at"] = stamp
        elif self.count_day == day and self.sent_count > 0:
            changes["sent_count"] = self.sent_count - 1
        return self.model_copy(update=changes) if changes else self


@functools.lru_cache(maxsize=256)
def zone_of(name: str) -> tzinfo:
    """The time zone named ``name`` (an IANA name such as ``"Europe/Paris"``).

    :raises ValueError: for an unknown name.
    """
    if not isinstance(name, str):
        raise ValueError(f"a time zone must be a name, not {type(name).__name__}")
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris'"
        ) from None


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


class AccountExplanation(_Model):
    """One row of :meth:`AccountPool.explain`: whether an account can send
    now and, if not, why and when it can.

    ``state`` is the first thing that holds it back: ``eligible``,
    ``inactive``, ``pending``, ``error``, ``quota_hold`` (held at its
    provider's quota), ``cooling_down`` (throttled), ``at_limit`` (its own
    daily limit), ``in_flight`` (every send slot taken) or ``waiting`` (its
    minimum wait). ``reasons`` lists every one, as sentences.
    ``next_send_at`` is when it can send next (now when eligible), or
    ``None`` when only a person can change that (a status other than
    ``active``, a daily limit of 0).

    .. versionadded:: 0.2
    """

    account_id: str
    account_email: str
    eligible: bool
    state: str
    reasons: tuple[str, ...] = ()
    sent_today: int
    daily_limit: int
    next_send_at: datetime | None
    last_error: str | None = None
    last_error_at: datetime | None = None

    @property
    def reason(self) -> str:
        """The reasons in one line ("eligible now" when there are none)."""
        return "; ".join(self.reasons) or "eligible now"

    @classmethod
    def of(cls, account: Account, now: datetime) -> AccountExplanation:
        """Explain ``account`` at ``now`` (by :meth:`Account.is_eligible`)."""
        blocks: list[tuple[str, str, datetime | None]] = []

        def at(seconds: float) -> datetime:
            return now + timedelta(seconds=seconds)

        if account.status is not AccountStatus.ACTIVE:
            why = f"status {account.status.value}"
            if account.status_reason:
                why += f": {account.status_reason}"
            blocks.append((account.status.value, why, None))
        pause = account.pause_left(now)
        if pause > 0:
            until = at(pause)
            if account.pause_kind is PauseKind.QUOTA:
                blocks.append(
                    ("quota_hold", f"held at provider quota until {_iso(until)}", until)
                )
            else:
                blocks.append(
                    ("cooling_down", f"cooling down until {_iso(until)}", until)
                )
        sent = account.sent_today(now)
        if account.daily_limit == 0:
            blocks.append(("at_limit", "daily limit is 0", None))
        elif account.remaining_today(now) <= 0:
            until = at(account.seconds_to_reset(now))
            blocks.append(
                (
                    "at_limit",
                    f"{sent}/{account.daily_limit} sent today; resets {_iso(until)}",
                    until,
                )
            )
        busy = account.busy_left(now)
        if busy > 0:
            until = at(busy)
            blocks.append(
                (
                    "in_flight",
                    f"{account.in_flight}/{account.max_in_flight} sends in flight "
                    f"(a slot frees by {_iso(until)} at the latest)",
                    until,
                )
            )
        wait = account.wait_left(now)
        if wait > 0:
            until = at(wait)
            blocks.append(("waiting", f"waiting until {_iso(until)}", until))
        ends = [end for _, _, end in blocks]
        next_send: datetime | None = now
        if blocks:
            next_send = None if None in ends else max(e for e in ends if e is not None)
        return cls(
            account_id=account.id,
            account_email=account.email,
            eligible=not blocks,
            state=blocks[0][0] if blocks else "eligible",
            reasons=tuple(why for _, why, _ in blocks),
            sent_today=sent,
            daily_limit=account.daily_limit,
            next_send_at=next_send,
            last_error=account.last_error,
            last_error_at=account.last_error_at,
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
