"""How a pool picks one account among the eligible ones.

The three built-in selectors name a :class:`~mailpool.storage.Strategy` that the
storage runs inside its atomic claim, whatever the number of accounts. Any
other selector is an object with ``choose(candidates) -> Account``, or a plain
callable taking the candidates: it sees a random sample of at most
:data:`~mailpool.storage.CANDIDATE_SAMPLE` eligible accounts (never empty, with
today's counts) and must be pure (no I/O).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from mailpool.models import Account
from mailpool.storage.base import Strategy

__all__ = [
    "LeastUsedSelector",
    "RandomSelector",
    "RoundRobinSelector",
    "Selector",
    "SelectorLike",
    "builtin_strategy",
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

    strategy = Strategy.RANDOM

    def __init__(self, seed: int | random.Random | None = None) -> None:
        self._random = seed if isinstance(seed, random.Random) else random.Random(seed)
        self._lock = threading.Lock()

    def choose(self, candidates: Sequence[Account], /) -> Account:
        """Any candidate, each as likely as the others."""
        with self._lock:
            return self._random.choice(candidates)


class RoundRobinSelector:
    """Takes the accounts in turn.

    In a pool, the storage keeps the turn (:attr:`Strategy.ROUND_ROBIN`), so
    every process sharing it takes part in one rotation. Used directly,
    :meth:`choose` keeps a cursor over the ids, so accounts that come and go
    (limits, waits) do not reset the rotation.
    """

    strategy = Strategy.ROUND_ROBIN

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
    """Takes the account with the fewest sends today (:meth:`choose`: ties go
    to the lowest id; in a pool the storage may break ties otherwise)."""

    strategy = Strategy.LEAST_USED

    def choose(self, candidates: Sequence[Account], /) -> Account:
        """The candidate with the lowest ``(sent_count, id)``."""
        return min(candidates, key=lambda account: (account.sent_count, account.id))


def builtin_strategy(selector: Selector) -> tuple[Strategy | None, random.Random]:
    """The storage strategy of a built-in selector (None for any other, and
    for subclasses that override ``choose``) and the random numbers to use."""
    rng = selector._random if isinstance(selector, RandomSelector) else _RNG
    builtin = type(selector) in (RandomSelector, RoundRobinSelector, LeastUsedSelector)
    return (selector.strategy if builtin else None), rng  # type: ignore[attr-defined]


_RNG = random.Random()


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
