"""How a pool picks one account among the eligible ones.

A selector is any object with ``choose(candidates) -> Account``, or a plain
callable taking the candidates. Selectors are pure: no I/O, and the candidates
are never empty and all eligible (with today's counts).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from mailpool.models import Account

__all__ = [
    "LeastUsedSelector",
    "RandomSelector",
    "RoundRobinSelector",
    "Selector",
    "SelectorLike",
]


@runtime_checkable
class Selector(Protocol):
    """**Protocol**: picks one account from a non-empty sequence of candidates."""

    def choose(self, candidates: Sequence[Account], /) -> Account:
        """Return one of ``candidates``."""
        ...


SelectorLike = Selector | Callable[[Sequence[Account]], Account]
"""A :class:`Selector`, or a function with the same signature as ``choose``."""


class RandomSelector:
    """Uniform random choice: spreads sends evenly over the accounts (default).

    :param seed: an int seed or a :class:`random.Random`, for reproducible runs.
    """

    def __init__(self, seed: int | random.Random | None = None) -> None:
        self._random = seed if isinstance(seed, random.Random) else random.Random(seed)
        self._lock = threading.Lock()

    def choose(self, candidates: Sequence[Account], /) -> Account:
        """Any candidate, each as likely as the others."""
        with self._lock:
            return self._random.choice(candidates)


class RoundRobinSelector:
    """Takes the accounts in turn, ordered by id.

    The cursor remembers the last id chosen, so accounts that come and go
    (limits, waits) do not reset the rotation.
    """

    def __init__(self) -> None:
        self._last: str | None = None
        self._lock = threading.Lock()

    def choose(self, candidates: Sequence[Account], /) -> Account:
        """The candidate whose id follows the last one chosen, wrapping around."""
        ordered = sorted(candidates, key=lambda account: account.id)
        with self._lock:
            chosen = next(
                (a for a in ordered if self._last is None or a.id > self._last),
                ordered[0],
            )
            self._last = chosen.id
        return chosen


class LeastUsedSelector:
    """Takes the account with the fewest sends today (ties: the lowest id)."""

    def choose(self, candidates: Sequence[Account], /) -> Account:
        """The candidate with the lowest ``(sent_count, id)``."""
        return min(candidates, key=lambda account: (account.sent_count, account.id))


def as_selector(selector: SelectorLike | None) -> Selector:
    """Wrap a plain function as a :class:`Selector`; ``None`` gives the default."""
    if selector is None:
        return RandomSelector()
    if isinstance(selector, Selector):
        return selector
    return _FunctionSelector(selector)


class _FunctionSelector:
    def __init__(self, function: Callable[[Sequence[Account]], Account]) -> None:
        self._function = function

    def choose(self, candidates: Sequence[Account], /) -> Account:
        return self._function(candidates)
