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

_MAX_ATTEMPTS = 100
_MAX_WAIT = 3600.0


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
        attempts = self.attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise ConfigurationError(
                f"RetryPolicy.attempts must be a whole number (got {attempts!r})"
            )
        if not 1 <= attempts <= _MAX_ATTEMPTS:
            raise ConfigurationError(
                f"RetryPolicy.attempts must be between 1 and {_MAX_ATTEMPTS} "
                f"(got {attempts})"
            )
        for name in ("initial_wait", "max_wait"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= _MAX_WAIT
            ):
                raise ConfigurationError(
                    f"RetryPolicy.{name} must be a number of seconds between 0 "
                    f"and {_MAX_WAIT:g} (got {value!r})"
                )
        if not callable(self.sleep):
            raise ConfigurationError("RetryPolicy.sleep must be callable")
        # Attempts 2 and on; built once (a Retrying keeps the state of each
        # call in thread-local storage, so threads may share it).
        retrying = Retrying(
            stop=stop_after_attempt(max(self.attempts - 1, 1)),
            wait=lambda state: self._wait_after(state.attempt_number + 1),
            retry=retry_if_exception_type(TemporarySendError),
            reraise=True,
            sleep=self.sleep,
            before_sleep=_log_retry,
        )
        object.__setattr__(self, "_retrying", retrying)

    def __reduce__(self) -> tuple[type[RetryPolicy], tuple[object, ...]]:
        # The prebuilt Retrying is rebuilt, not pickled (it holds a lambda).
        return type(self), (
            self.attempts,
            self.initial_wait,
            self.max_wait,
            self.jitter,
            self.sleep,
        )

    def _wait_after(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` failed."""
        wait = self.initial_wait * 2.0 ** (attempt - 1)
        if self.jitter:
            wait += random.uniform(0, self.initial_wait)
        return min(wait, self.max_wait)

    def call(self, function: Callable[[], T], on_attempt: Callable[[], None]) -> T:
        """Run ``function`` under this policy; ``on_attempt`` runs before each
        try. The last error is re-raised as is (never ``tenacity.RetryError``)."""

        def attempt() -> T:
            on_attempt()
            return function()

        try:
            return attempt()  # the usual case, without the retry machinery
        except TemporarySendError as exc:
            if self.attempts == 1:
                raise
            wait = self._wait_after(1)
            log.info("retrying in %.2fs after attempt 1: %s", wait, exc)
        self.sleep(wait)
        retrying: Retrying = self._retrying  # type: ignore[attr-defined]
        return retrying(attempt)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.info(
        "retrying in %.2fs after attempt %d: %s", wait, state.attempt_number + 1, error
    )
