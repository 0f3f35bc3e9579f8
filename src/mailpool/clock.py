"""Time: an injectable clock and the time zone that decides what "today" is.

A :data:`Clock` is any callable returning an aware :class:`~datetime.datetime`.
Which day a count belongs to is the account's own business: see
:meth:`Account.local_day <mailpool.Account.local_day>` and
:attr:`Account.timezone <mailpool.Account.timezone>`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone, tzinfo

from mailpool.errors import ConfigurationError

__all__ = ["Clock", "local_now", "system_clock"]

Clock = Callable[[], datetime]
"""A callable returning the current time as an aware datetime."""


def system_clock() -> datetime:
    """The current time in UTC."""
    return datetime.now(timezone.utc)


def local_now(clock: Clock, zone: tzinfo) -> datetime:
    """``clock()`` in ``zone``; refuses a clock that returns naive datetimes."""
    now = clock()
    if now.tzinfo is None:
        raise ConfigurationError(
            "the clock returned a naive datetime: return an aware one, e.g. "
            "datetime.now(timezone.utc)"
        )
    return now.astimezone(zone)
