"""Retries with exponential backoff: the only module that imports tenacity."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from mailpool.errors import ConfigurationError, TemporarySendError

__all__ = ["RetryPolicy"]

log = logging.getLogger("mailpool.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how patiently, one account retries a transient failure.

    Only :class:`~mailpool.TemporarySendError` (4xx replies, disconnects,
    timeouts) is retried; other errors end the account's turn at once.

    :param attempts: tries per account, the first one included (1 = no retry).
    :param initial_wait: seconds before the first retry; doubles each time.
    :param max_wait: the longest wait between two tries.
    :param jitter: add up to ``initial_wait`` random seconds to each wait, so
        many workers do not retry in lockstep.
    :param sleep: the function that waits; tests pass a recorder.
    """

    attempts: int = 3
    initial_wait: float = 0.5
    max_wait: float = 10.0
    jitter: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy.attempts must be at least 1 (got {self.attempts})"
            )
        if self.initial_wait < 0 or self.max_wait < 0:
            raise ConfigurationError("RetryPolicy waits must not be negative")

    def _wait(self, state: RetryCallState) -> float:
        wait = self.initial_wait * 2.0 ** (state.attempt_number - 1)
        if self.jitter:
            wait += random.uniform(0, self.initial_wait)
        return min(wait, self.max_wait)

    def call(self, function: Callable[[], T], on_attempt: Callable[[], None]) -> T:
        """Run ``function`` under this policy; ``on_attempt`` runs before each
        try. The last error is re-raised as is (never ``tenacity.RetryError``)."""

        def attempt() -> T:
            on_attempt()
            return function()

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception_type(TemporarySendError),
            reraise=True,
            sleep=self.sleep,
            before_sleep=_log_retry,
        )
        return retrying(attempt)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.info(
        "retrying in %.2fs after attempt %d: %s", wait, state.attempt_number, error
    )
