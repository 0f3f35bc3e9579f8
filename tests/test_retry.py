"""Retries: transient failures are retried with growing waits (recorded, not
slept); permanent ones are not; the last error escapes, never tenacity's."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailpool import (
    Account,
    AccountPool,
    AuthenticationError,
    ConfigurationError,
    InMemoryStorage,
    MessageRejected,
    RetryPolicy,
    SendResult,
    SMTPSettings,
    SMTPTransport,
    TemporarySendError,
)
from mailpool.testing import ManualClock
from smtpserver import USERS, SMTPTestServer

ALICE = "alice@example.com"
TRY_AGAIN = "451 4.3.0 Try again later"

PoolFactory = Callable[..., AccountPool]


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_pool(
    smtp_server: SMTPTestServer, sleeps: list[float]
) -> Iterator[PoolFactory]:
    """A pool of one account (logging in on the relay), without failover, whose
    retry policy takes ``**policy`` and records its waits in ``sleeps``."""
    storage = InMemoryStorage()
    smtp = SMTPSettings(
        host=smtp_server.host,
        port=smtp_server.port,
        use_tls=False,
        password=USERS[ALICE],
        allow_insecure_auth=True,
    )
    storage.add(Account(email=ALICE, smtp=smtp, min_wait_time=0))
    transport = SMTPTransport(timeout=5.0)

    def make(**policy: Any) -> AccountPool:
        retry = RetryPolicy(**{"jitter": False, "sleep": sleeps.append, **policy})
        clock = ManualClock()
        return AccountPool(
            storage, retry=retry, failover=0, transport=transport, clock=clock
        )

    yield make
    transport.close()


def send(pool: AccountPool) -> SendResult:
    return pool.send_mail(subject="Hello", body="Hi Dave.", to=["dave@example.net"])


@pytest.mark.parametrize(
    "policy",
    [{"attempts": 0}, {"attempts": -1}, {"initial_wait": -0.5}, {"max_wait": -1.0}],
)
def test_retry_policy_refuses_impossible_settings(policy: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**policy)


def test_temporary_failure_is_retried_and_delivered_once(
    smtp_server: SMTPTestServer, make_pool: PoolFactory, sleeps: list[float]
) -> None:
    smtp_server.fail_next("DATA", TRY_AGAIN)

    result = send(make_pool())

    assert result.attempts == 2
    assert sleeps == [0.5]
    assert len(smtp_server.messages) == 1


def test_dropped_connection_is_retried_on_a_new_session(
    smtp_server: SMTPTestServer, make_pool: PoolFactory, sleeps: list[float]
) -> None:
    smtp_server.drop_next("DATA")

    result = send(make_pool())

    assert result.attempts == 2
    assert len(sleeps) == 1
    assert len(smtp_server.messages) == 1
    assert smtp_server.connections == 2


def test_retries_stop_after_the_attempts_and_raise_the_last_error(
    smtp_server: SMTPTestServer, make_pool: PoolFactory, sleeps: list[float]
) -> None:
    for n in (1, 2, 3):
        smtp_server.fail_next("DATA", f"451 4.3.0 busy, try {n}")
    pool = make_pool(attempts=3)

    with pytest.raises(TemporarySendError, match="busy, try 3") as info:
        send(pool)

    assert info.value.smtp_code == 451
    assert sleeps == [0.5, 1.0]
    assert smtp_server.messages == []
    # Exactly three attempts used the three faults: the next send goes at once.
    assert send(pool).attempts == 1


def test_rejected_message_is_not_retried(
    smtp_server: SMTPTestServer, make_pool: PoolFactory, sleeps: list[float]
) -> None:
    smtp_server.fail_next("RCPT", "550 5.1.1 No such user")  # once: a retry would pass

    with pytest.raises(MessageRejected):
        send(make_pool())

    assert sleeps == []
    assert smtp_server.messages == []


def test_authentication_failure_is_not_retried(
    smtp_server: SMTPTestServer, make_pool: PoolFactory, sleeps: list[float]
) -> None:
    # smtplib tries PLAIN, then LOGIN: refuse both, on this connection only.
    smtp_server.fail_next("AUTH", "535 5.7.8 Authentication failed", times=2)

    with pytest.raises(AuthenticationError) as info:
        send(make_pool())

    assert info.value.smtp_code == 535
    assert sleeps == []
    assert smtp_server.connections == 1
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("policy", "waits"),
    [
        ({"attempts": 3}, [0.5, 1.0]),
        ({"attempts": 5, "max_wait": 1.5}, [0.5, 1.0, 1.5, 1.5]),
        ({"attempts": 4, "initial_wait": 0.25, "max_wait": 0.6}, [0.25, 0.5, 0.6]),
    ],
)
def test_backoff_waits_double_up_to_max_wait(
    smtp_server: SMTPTestServer,
    make_pool: PoolFactory,
    sleeps: list[float],
    policy: dict[str, Any],
    waits: list[float],
) -> None:
    smtp_server.fail_next("DATA", TRY_AGAIN, times=policy["attempts"])

    with pytest.raises(TemporarySendError):
        send(make_pool(**policy))

    assert sleeps == waits


def test_default_jitter_adds_up_to_initial_wait_to_each_backoff(
    smtp_server: SMTPTestServer, make_pool: PoolFactory, sleeps: list[float]
) -> None:
    smtp_server.fail_next("DATA", TRY_AGAIN, times=3)

    result = send(make_pool(jitter=True, attempts=4, max_wait=10.0))

    assert result.attempts == 4
    for wait, backoff in zip(sleeps, [0.5, 1.0, 2.0], strict=True):
        assert backoff < wait <= backoff + 0.5


def test_the_last_error_itself_escapes_never_a_tenacity_retry_error() -> None:
    raised: list[TemporarySendError] = []
    tries: list[int] = []

    def always_deferred() -> None:
        raised.append(TemporarySendError(f"deferred #{len(raised) + 1}"))
        raise raised[-1]

    policy = RetryPolicy(attempts=3, jitter=False, sleep=lambda seconds: None)
    with pytest.raises(TemporarySendError) as info:
        policy.call(always_deferred, lambda: tries.append(len(tries)))

    assert info.value is raised[-1]
    assert len(raised) == len(tries) == 3


def test_a_policy_pickles_for_worker_processes() -> None:
    policy = RetryPolicy(attempts=4, initial_wait=0.25, max_wait=2.0, jitter=False)
    again = pickle.loads(pickle.dumps(policy))
    assert again == policy
    failures = iter([TemporarySendError("451 busy")] * 3)

    def flaky() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "sent"

    slept: list[float] = []
    sleeping = RetryPolicy(
        attempts=4, initial_wait=0.25, jitter=False, sleep=slept.append
    )
    assert pickle.loads(pickle.dumps(sleeping)).attempts == 4
    assert again.attempts == 4 and sleeping.call(flaky, lambda: None) == "sent"
    assert slept == [0.25, 0.5, 1.0]
