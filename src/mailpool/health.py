"""HealthPolicy: when a failing account leaves rotation, and for how long.

.. versionadded:: 0.2
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailpool.errors import ConfigurationError
from mailpool.models import Account

__all__ = ["HealthPolicy"]


@dataclass(frozen=True)
class HealthPolicy:
    """How the pool reacts to an account's failures (see docs/replies.md).

    :param max_failures: failed sends in a row (connect, TLS, transient
        replies, each after its retries) that set the account's status to
        ``error``; 0 never does. A delivery starts the count again.
    :param cool_down: seconds an account pauses after a throttling reply
        (``421 4.7.0``, ``450 4.7.1``, ``432 4.3.2``).
    :param revive_after: seconds after its last error before
        :meth:`AccountPool.revive` first probes an account in ``error``;
        doubled after each failed probe.
    :param revive_max: the longest wait between two probes of one account.

    A refused login or another *account broken* reply sets the status to
    ``error`` at once; a quota reply holds the account at its cap until its
    next daily reset. The state is stored, so every worker respects it.

    .. versionadded:: 0.2
    """

    max_failures: int = 5
    cool_down: float = 300.0
    revive_after: float = 300.0
    revive_max: float = 24 * 3600.0

    def next_probe(self, account: Account) -> datetime | None:
        """When :meth:`AccountPool.revive` may probe ``account`` next: for an
        account that mailpool set to ``error`` (:attr:`Account.revivable`),
        :attr:`revive_after` after its last error, doubled for each failed
        probe since (``consecutive_failures``), at most :attr:`revive_max`;
        None for any other account (one set to ``error`` by hand stays there
        until you reactivate it)."""
        if not account.revivable or account.last_error_at is None:
            return None
        doublings = min(account.consecutive_failures, 40)
        wait = min(self.revive_after * 2**doublings, self.revive_max)
        return account.last_error_at + timedelta(seconds=wait)

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_failures, bool)
            or not isinstance(self.max_failures, int)
            or self.max_failures < 0
        ):
            raise ConfigurationError(
                "HealthPolicy max_failures must be a whole number, 0 or more "
                f"(got {self.max_failures!r})"
            )
        if not (
            isinstance(self.cool_down, (int, float))
            and math.isfinite(self.cool_down)
            and 0 <= self.cool_down <= 7 * 24 * 3600
        ):
            raise ConfigurationError(
                "HealthPolicy cool_down must be a number of seconds between 0 "
                f"and a week (got {self.cool_down!r})"
            )
        for name in ("revive_after", "revive_max"):
            value = getattr(self, name)
            if not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and 0 < value <= 30 * 24 * 3600
            ):
                raise ConfigurationError(
                    f"HealthPolicy {name} must be a number of seconds above 0 "
                    f"and at most 30 days (got {value!r})"
                )
        if self.revive_max < self.revive_after:
            raise ConfigurationError(
                "HealthPolicy revive_max must be at least revive_after (got "
                f"{self.revive_max!r} < {self.revive_after!r})"
            )
