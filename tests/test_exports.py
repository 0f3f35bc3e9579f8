"""The public API: every name in the design is importable and __all__ is tidy."""

from __future__ import annotations

from pathlib import Path

import mailpool

DESIGNED = {
    "Account", "SMTPSettings", "OAuth2Credentials", "AccountStatus", "ConnectionType",
    "PROVIDERS", "AccountPool", "SendResult", "ConnectionTestResult",
    "InMemoryStorage", "JSONStorage", "SQLStorage", "open_storage",
    "RandomSelector", "RoundRobinSelector", "LeastUsedSelector",
    "SMTPTransport", "RetryPolicy", "MailpoolError", "ConfigurationError",
    "StorageError", "AccountNotFound", "NoAccountAvailable", "SendError",
    "TemporarySendError", "AuthenticationError", "MessageRejected",
}  # fmt: skip


def test_designed_names_are_exported() -> None:
    assert set(mailpool.__all__) >= DESIGNED
    for name in mailpool.__all__:
        assert hasattr(mailpool, name), name


def test_all_is_sorted_and_unique() -> None:
    assert len(set(mailpool.__all__)) == len(mailpool.__all__)

    def isort_style(name: str) -> tuple[int, str]:
        kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
        return kind, name

    assert mailpool.__all__ == sorted(mailpool.__all__, key=isort_style)


def test_public_names_are_documented() -> None:
    for name in mailpool.__all__:
        value = getattr(mailpool, name)
        if callable(value) and not name.startswith("_"):
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"


def test_every_error_derives_from_mailpool_error() -> None:
    errors = [
        value
        for value in vars(mailpool).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ]
    assert len(errors) >= 10
    assert all(issubclass(error, mailpool.MailpoolError) for error in errors)
    assert issubclass(mailpool.ConfigurationError, ValueError)
    assert issubclass(mailpool.AccountNotFound, KeyError)
    assert issubclass(mailpool.ConnectFailure, ConnectionError)


def test_every_exported_name_has_its_entry_in_the_api_reference() -> None:
    api = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    missing = [
        name
        for name in mailpool.__all__
        if name != "__version__" and f"::: mailpool.{name}\n" not in api
    ]
    assert missing == []
