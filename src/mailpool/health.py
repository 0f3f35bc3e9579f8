"""HealthPolicy: when a failing account leaves rotation, and for how long.

.. versionadded:: 0.2
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mailpool.errors import ConfigurationError

__all__ = ["HealthPolicy"]


@dataclass(frozen=True)
class HealthPolicy:
    """How the pool reacts to an account's failures (see docs/replies.md).

    :param max_failures: failed sends in a row (connect, TLS, transient
        replies, each after its retries) that set the account's status to
        ``error``; 0 never does. A delivery starts the count again.
    :param cool_down: seconds an account pauses after a throttling reply
        (``421 4.7.0``, ``450 4.7.1``, ``432 4.3.2``).

    A refused login or another *account broken* reply sets the status to
    ``error`` at once; a quota reply holds the account at its cap until its
    next daily reset. The state is stored, so every worker respects it.

    .. versionadded:: 0.2
    """

    max_failures: int = 5
    cool_down: float = 300.0

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
