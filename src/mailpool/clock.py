"""Time: an injectable clock and the time zone that decides what "today" is.

A :data:`Clock` is any callable returning an aware :class:`~datetime.datetime`.
The pool converts it to its own time zone (UTC by default), and an account's
daily count belongs to that date: a count from an earlier day reads as 0.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailpool.errors import ConfigurationError

__all__ = ["Clock", "resolve_timezone", "system_clock"]

Clock = Callable[[], datetime]
"""A callable returning the current time as an aware datetime."""


def system_clock() -> datetime:
    """The current time in UTC."""
    return datetime.now(timezone.utc)


def resolve_timezone(value: tzinfo | str | None) -> tzinfo:
    """Turn ``None`` (UTC), an IANA name such as ``"Europe/Paris"`` or a tzinfo
    into a tzinfo.

    :raises ConfigurationError: for an unknown time zone name.
    """
    if value is None:
        return timezone.utc
    if isinstance(value, tzinfo):
        return value
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(
            f"unknown time zone {value!r}: use an IANA name such as 'Europe/Paris'"
        ) from exc


def local_now(clock: Clock, zone: tzinfo) -> datetime:
    """``clock()`` in ``zone``; refuses a clock that returns naive datetimes."""
    now = clock()
    if now.tzinfo is None:
        raise ConfigurationError(
            "the clock returned a naive datetime: return an aware one, e.g. "
            "datetime.now(timezone.utc)"
        )
    return now.astimezone(zone)
