"""The storage contract suite, which ships in the package as
:mod:`mailpool.testing.storage`; re-exported here for the repository's tests."""

from __future__ import annotations

from mailpool.testing.storage import (
    CHI_SQUARE_CRITICAL,
    DAY,
    NOW,
    UNIFORM_CLAIMS,
    Reopen,
    StorageContract,
    assert_exactly_the_limit_granted,
    chi_square,
    claim,
    claim_in_threads,
    make_account,
    seconds,
)

__all__ = [
    "CHI_SQUARE_CRITICAL",
    "DAY",
    "NOW",
    "UNIFORM_CLAIMS",
    "Reopen",
    "StorageContract",
    "assert_exactly_the_limit_granted",
    "chi_square",
    "claim",
    "claim_in_threads",
    "make_account",
    "seconds",
]
