"""Selectors pick among eligible accounts; the default is random."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest

from mailpool import (
    Account,
    LeastUsedSelector,
    RandomSelector,
    RoundRobinSelector,
    Selector,
)
from mailpool.selection import as_selector


def candidates(*counts: int) -> list[Account]:
    return [
        Account(
            id=f"id-{index}",
            email=f"user{index}@example.com",
            sent_count=count,
            smtp={"host": "relay", "use_tls": False},
        )
        for index, count in enumerate(counts)
    ]


@pytest.mark.parametrize(
    "selector", [RandomSelector(1), RoundRobinSelector(), LeastUsedSelector()]
)
def test_every_selector_satisfies_the_protocol_and_picks_a_candidate(
    selector: Selector,
) -> None:
    pool = candidates(3, 1, 2)
    assert isinstance(selector, Selector)
    for _ in range(10):
        assert selector.choose(pool) in pool


def test_random_selector_spreads_choices_and_is_reproducible() -> None:
    pool = candidates(0, 0, 0)
    picks = [RandomSelector(42).choose(pool).id for _ in range(1)]
    first = [s.id for s in map(RandomSelector(42).choose, [pool] * 300)]
    second = [s.id for s in map(RandomSelector(random.Random(42)).choose, [pool] * 300)]
    assert first == second and picks[0] == first[0]
    spread = Counter(first)
    assert set(spread) == {"id-0", "id-1", "id-2"}
    assert min(spread.values()) > 60


def test_round_robin_takes_accounts_in_turn_by_id() -> None:
    pool = candidates(0, 0, 0)
    selector = RoundRobinSelector()
    assert [selector.choose(pool).id for _ in range(4)] == [
        "id-0",
        "id-1",
        "id-2",
        "id-0",
    ]


def test_round_robin_keeps_its_place_when_accounts_drop_out() -> None:
    pool = candidates(0, 0, 0)
    selector = RoundRobinSelector()
    assert selector.choose(pool).id == "id-0"
    assert selector.choose([pool[0], pool[2]]).id == "id-2"
    assert selector.choose(pool).id == "id-0"


def test_least_used_takes_the_fewest_sends_then_the_lowest_id() -> None:
    assert LeastUsedSelector().choose(candidates(5, 2, 2)).id == "id-1"


def test_a_plain_function_works_as_a_selector() -> None:
    def last(accounts: Sequence[Account]) -> Account:
        return accounts[-1]

    assert as_selector(last).choose(candidates(0, 0)).id == "id-1"
    assert isinstance(as_selector(None), RandomSelector)
