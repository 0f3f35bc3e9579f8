"""Errors carry their context, survive pickling, and never hold a secret."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from mailpool import (
    Account,
    AccountNotFound,
    ConfigurationError,
    MailpoolError,
    MessageRejected,
    NoAccountAvailable,
    NoAccountReason,
    SMTPSettings,
    StorageError,
)

SECRET = "hunter2-secret"


def chain(error: BaseException) -> list[BaseException]:
    """``error`` and every exception reachable from it as cause or context."""
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


@pytest.mark.parametrize(
    "settings",
    [
        {"host": "h", "use_tls": True, "use_ssl": True, "password": SECRET},
        {"host": "h", "use_tls": False, "password": SECRET},
        {"host": "h", "port": 0, "password": SECRET},
    ],
)
def test_no_secret_is_reachable_from_a_validation_error(
    settings: dict[str, Any],
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Account(email="a@example.com", smtp=settings)
    for error in chain(caught.value):
        errors = getattr(error, "errors", None)
        details = repr(errors()) if callable(errors) else ""
        assert SECRET not in f"{error} {error!r} {vars(error)} {details}"
    assert caught.value.problems  # the structured problems remain


def test_problems_name_nested_fields() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Account(email="a@example.com", smtp={"host": "h", "port": 70000})
    assert caught.value.problems == (
        ("smtp.port", "Input should be less than or equal to 65535"),
    )
    with pytest.raises(ConfigurationError) as caught:
        SMTPSettings(host="h", use_tls=True, use_ssl=True)
    ((field, problem),) = caught.value.problems
    assert field == "" and "exclude each other" in problem


@pytest.mark.parametrize(
    "error",
    [
        NoAccountAvailable(
            "all waiting", reason=NoAccountReason.ALL_WAITING, retry_after=2.5
        ),
        AccountNotFound("acct-1", location="/tmp/a.json"),
        MessageRejected(
            "no", recipients=["x@example.org"], account_id="a", smtp_code=550
        ),
        StorageError("broken", location="db"),
        ConfigurationError("bad", problems=[("port", "too big")]),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_survive_pickling_with_their_attributes(error: MailpoolError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
