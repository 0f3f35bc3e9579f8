"""AccountPool end to end against a real SMTP relay: selection, daily limits,
minimum waits, scopes, failover, validation, connection tests and secrets."""

from __future__ import annotations

import logging
import smtplib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import compat32
from typing import Any

import pytest
from pydantic import SecretStr

from mailpool import (
    Account,
    AccountNotFound,
    AccountPool,
    AccountStatus,
    AuthenticationError,
    Claim,
    ConfigurationError,
    DeliveryUnknown,
    InMemoryStorage,
    LeastUsedSelector,
    MailpoolError,
    MessageRejected,
    NoAccountAvailable,
    NoAccountReason,
    OAuth2Credentials,
    RandomSelector,
    RetryPolicy,
    RoundRobinSelector,
    Scope,
    SendResult,
    SMTPSettings,
    SMTPTransport,
    TemporarySendError,
)
from mailpool.testing import ManualClock, RecordingTransport
from pooltools import (
    ALICE,
    BOB,
    CAROL,
    RECIPIENT,
    UNUSED,
    AccountFactory,
    PoolFactory,
    first,
    send,
    usage_state,
)
from smtpserver import USERS, SMTPTestServer

# -- the quick example ------------------------------------------------------------


def test_quick_example_sends_through_a_plain_relay(
    smtp_server: SMTPTestServer, clock: ManualClock
) -> None:
    storage = InMemoryStorage()
    account = storage.add(
        Account(
            email=ALICE,
            sender_name="Alice Example",
            daily_limit=2,
            smtp=SMTPSettings(
                host=smtp_server.host, port=smtp_server.port, use_tls=False
            ),
        )
    )

    with AccountPool(storage, clock=clock) as pool:
        result = pool.send_mail(subject="Welcome", body="Hello!", to=[RECIPIENT])

    assert isinstance(result, SendResult)
    assert result.account_id == account.id
    assert result.account_email == ALICE
    assert result.attempts == 1
    assert result.sent_at == clock()
    [received] = smtp_server.messages
    assert received.message["Message-ID"] == result.message_id
    assert received.message["Subject"] == "Welcome"
    assert received.message.get_content() == "Hello!\n"


# -- selection --------------------------------------------------------------------


def test_seeded_random_selection_spreads_sends_over_all_accounts(
    smtp_server: SMTPTestServer, add: AccountFactory, pool: AccountPool
) -> None:
    for email in (ALICE, BOB, CAROL):
        add(email, daily_limit=100)

    senders = Counter(send(pool).account_email for _ in range(60))

    assert set(senders) == {ALICE, BOB, CAROL}
    assert min(senders.values()) >= 10
    assert Counter(m.mail_from for m in smtp_server.messages) == senders


def test_random_selectors_with_the_same_seed_choose_the_same_accounts(
    add: AccountFactory, make_pool: PoolFactory
) -> None:
    for email in (ALICE, BOB, CAROL):
        add(email, daily_limit=100)
    one, two = (
        make_pool(selector=RandomSelector(99)),
        make_pool(selector=RandomSelector(99)),
    )

    first_run = [send(one).account_email for _ in range(15)]
    second_run = [send(two).account_email for _ in range(15)]

    assert first_run == second_run
    assert len(set(first_run)) > 1


def test_round_robin_selector_takes_the_accounts_in_turn(
    add: AccountFactory, make_pool: PoolFactory
) -> None:
    for email in (CAROL, ALICE, BOB):
        add(email, id=f"id-{email}")
    pool = make_pool(selector=RoundRobinSelector())

    turns = [send(pool).account_email for _ in range(7)]
    assert sorted(turns[:3]) == [ALICE, BOB, CAROL]  # each once, then again
    assert turns[3:6] == turns[:3] and turns[6] == turns[0]


def test_least_used_selector_prefers_the_fewest_sends_today(
    add: AccountFactory, make_pool: PoolFactory, clock: ManualClock
) -> None:
    today = clock().date()
    add(ALICE, id="a", sent_count=2, count_day=today)
    add(BOB, id="b", sent_count=1, count_day=today)
    add(CAROL, id="c", sent_count=9, count_day=today - timedelta(days=1))  # reads 0
    pool = make_pool(selector=LeastUsedSelector())

    assert [send(pool).account_email for _ in range(4)] == [CAROL, BOB, CAROL, ALICE]


def test_a_plain_function_works_as_the_selector(
    add: AccountFactory, make_pool: PoolFactory
) -> None:
    for email in (ALICE, BOB, CAROL):
        add(email)
    offered: list[list[str]] = []

    def last(candidates: Sequence[Account]) -> Account:
        offered.append([account.email for account in candidates])
        return candidates[-1]

    pool = make_pool(selector=last)

    assert [send(pool).account_email for _ in range(2)] == [CAROL, CAROL]
    assert offered == [[ALICE, BOB, CAROL]] * 2


# -- daily limit and minimum wait -------------------------------------------------


@pytest.mark.parametrize(
    ("start", "zone", "to_midnight"),
    [
        pytest.param(
            datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc), None, 15 * 3600, id="utc"
        ),
        # 23:30 in Paris, while UTC midnight is still 90 minutes away.
        pytest.param(
            datetime(2026, 1, 1, 22, 30, tzinfo=timezone.utc),
            "Europe/Paris",
            1800,
            id="paris",
        ),
        # 02:00 CEST on 25 October 2026; at 03:00 clocks go back to 02:00, so
        # Paris midnight (CET) is 23:00 UTC: 23 real hours away, not 22.
        pytest.param(
            datetime(2026, 10, 25, 0, 0, tzinfo=timezone.utc),
            "Europe/Paris",
            23 * 3600,
            id="paris-dst-end",
        ),
    ],
)
def test_daily_limit_holds_until_midnight_in_the_account_time_zone(
    smtp_server: SMTPTestServer,
    add: AccountFactory,
    make_pool: PoolFactory,
    start: datetime,
    zone: str | None,
    to_midnight: int,
) -> None:
    clock = ManualClock(start)
    add(daily_limit=2, timezone=zone or "UTC")
    pool = make_pool(clock=clock)
    send(pool)
    send(pool)

    with pytest.raises(NoAccountAvailable) as info:
        send(pool)

    assert info.value.reason is NoAccountReason.ALL_AT_LIMIT
    assert info.value.retry_after == to_midnight
    clock.advance(to_midnight - 1)
    with pytest.raises(NoAccountAvailable):
        send(pool)
    clock.advance(1)
    assert send(pool).account_email == ALICE
    assert len(smtp_server.messages) == 3


def test_min_wait_time_spaces_two_sends_from_one_account(
    add: AccountFactory, pool: AccountPool, clock: ManualClock
) -> None:
    add(min_wait_time=60)
    send(pool)

    with pytest.raises(NoAccountAvailable) as info:
        send(pool)
    assert info.value.reason is NoAccountReason.ALL_WAITING
    assert info.value.retry_after == 60

    clock.advance(59.5)
    with pytest.raises(NoAccountAvailable) as info:
        send(pool)
    assert info.value.retry_after == 0.5

    clock.advance(0.5)
    assert send(pool).account_email == ALICE


# -- why no account is available --------------------------------------------------


def test_empty_storage_raises_no_accounts(pool: AccountPool) -> None:
    with pytest.raises(NoAccountAvailable) as info:
        send(pool)

    assert info.value.reason is NoAccountReason.NO_ACCOUNTS
    assert info.value.retry_after is None
    assert "all accounts" in str(info.value)


def test_scope_without_accounts_raises_no_accounts_naming_the_scope(
    add: AccountFactory, make_pool: PoolFactory
) -> None:
    add(owner="other")

    with pytest.raises(NoAccountAvailable) as info:
        send(make_pool(owner="acme"))

    assert info.value.reason is NoAccountReason.NO_ACCOUNTS
    assert "owner='acme'" in str(info.value)


def test_only_inactive_or_error_accounts_raise_all_inactive(
    smtp_server: SMTPTestServer, add: AccountFactory, make_pool: PoolFactory
) -> None:
    add(ALICE, owner="acme", status=AccountStatus.INACTIVE)
    add(BOB, owner="acme", status=AccountStatus.ERROR, status_reason="535")
    add(CAROL, owner="other")

    with pytest.raises(NoAccountAvailable) as info:
        send(make_pool(owner="acme"))

    assert info.value.reason is NoAccountReason.ALL_INACTIVE
    assert info.value.retry_after is None
    message = str(info.value)
    assert "owner='acme'" in message
    assert "1 error" in message and "1 inactive" in message
    assert smtp_server.connections == 0


@pytest.mark.parametrize(
    ("options", "problem"),
    [({"failover": -1}, "failover"), ({"lease_timeout": 0}, "lease_timeout")],
)
def test_pool_refuses_impossible_settings(
    storage: InMemoryStorage, options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        AccountPool(storage, **options)


# -- scope ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "senders"),
    [
        ({"owner": "acme"}, {ALICE, BOB}),
        ({"tag": "spring"}, {ALICE, CAROL}),
        ({"owner": "acme", "tag": "spring"}, {ALICE}),
        ({"account_ids": ["id-bob", "id-carol"]}, {BOB, CAROL}),
    ],
)
def test_scope_restricts_the_accounts_that_send(
    add: AccountFactory,
    make_pool: PoolFactory,
    scope: dict[str, Any],
    senders: set[str],
) -> None:
    add(ALICE, id="id-alice", owner="acme", tags={"spring"})
    add(BOB, id="id-bob", owner="acme", tags={"autumn"})
    add(CAROL, id="id-carol", owner="other", tags={"spring"})
    pool = make_pool(selector=RoundRobinSelector(), **scope)

    assert {send(pool).account_email for _ in range(6)} == senders


def test_test_connection_outside_the_scope_is_not_found(
    smtp_server: SMTPTestServer, add: AccountFactory, make_pool: PoolFactory
) -> None:
    carol = add(CAROL, owner="other")
    pool = make_pool(owner="acme")

    for key in (carol.id, CAROL, "nobody@example.com"):
        with pytest.raises(AccountNotFound):
            pool.test_connection(key)
    assert smtp_server.connections == 0


# -- failover ---------------------------------------------------------------------


WRONG_PASSWORD = "alice-WRONG-pw"


@pytest.fixture
def locked_out(add: AccountFactory) -> tuple[Account, Account]:
    """Alice, whose password the relay refuses, and Bob, who needs none."""
    return add(ALICE, password=WRONG_PASSWORD), add(BOB)


def test_auth_failure_puts_the_account_in_error_and_fails_over(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    locked_out: tuple[Account, Account],
    make_pool: PoolFactory,
) -> None:
    alice, bob = locked_out
    pool = make_pool(selector=first)

    result = send(pool)

    assert result.account_email == BOB
    assert result.attempts == 2
    assert [m.mail_from for m in smtp_server.messages] == [BOB]
    assert usage_state(storage, alice) == (AccountStatus.ERROR, 0, None)
    reason = storage.get(alice.id).status_reason
    assert reason and "535" in reason
    assert WRONG_PASSWORD not in reason
    assert storage.get(bob.id).sent_count == 1
    assert {send(pool).account_email for _ in range(3)} == {BOB}


def test_auth_failure_without_failover_raises_authentication_error(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    locked_out: tuple[Account, Account],
    make_pool: PoolFactory,
) -> None:
    alice, bob = locked_out

    with pytest.raises(AuthenticationError) as info:
        send(make_pool(selector=first, failover=0))

    assert info.value.account_id == alice.id
    assert storage.get(alice.id).status is AccountStatus.ERROR
    assert storage.get(bob.id).sent_count == 0
    assert smtp_server.messages == []


@pytest.fixture
def two_accounts(add: AccountFactory) -> list[Account]:
    """Alice and Bob on the open relay."""
    return [add(ALICE), add(BOB)]


@pytest.fixture
def in_order_pool(make_pool: PoolFactory, sleeps: list[float]) -> AccountPool:
    """Tries the accounts in email order, two attempts each."""
    retry = RetryPolicy(attempts=2, jitter=False, sleep=sleeps.append)
    return make_pool(selector=first, retry=retry)


def test_rejected_recipient_is_not_tried_through_another_account(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    two_accounts: list[Account],
    in_order_pool: AccountPool,
    sleeps: list[float],
) -> None:
    smtp_server.fail_next("RCPT", "550 5.1.1 No such user")  # once: a retry would pass

    with pytest.raises(MessageRejected) as info:
        send(in_order_pool)

    assert info.value.recipients == (RECIPIENT,)
    assert smtp_server.messages == []
    assert sleeps == []
    assert [usage_state(storage, a) for a in two_accounts] == [UNUSED, UNUSED]


def test_transient_failures_on_every_account_raise_the_last_error(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    two_accounts: list[Account],
    in_order_pool: AccountPool,
    sleeps: list[float],
) -> None:
    smtp_server.fail_next("DATA", "451 4.3.0 alice is busy", times=2)
    smtp_server.fail_next("DATA", "451 4.3.0 bob is busy", times=2)

    with pytest.raises(TemporarySendError, match="bob is busy") as info:
        send(in_order_pool)

    assert info.value.account_id == two_accounts[1].id
    assert info.value.smtp_code == 451
    assert sleeps == [0.5, 0.5]
    assert smtp_server.messages == []
    assert [usage_state(storage, a) for a in two_accounts] == [UNUSED, UNUSED]


def test_attempts_count_every_try_over_the_accounts_tried(
    smtp_server: SMTPTestServer, two_accounts: list[Account], in_order_pool: AccountPool
) -> None:
    smtp_server.fail_next("DATA", "451 4.3.0 Try again later", times=2)

    result = send(in_order_pool)

    assert (result.account_email, result.attempts) == (BOB, 3)
    assert len(smtp_server.messages) == 1


def test_failed_send_leaves_the_count_and_last_sent_at_unchanged(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    add: AccountFactory,
    pool: AccountPool,
    clock: ManualClock,
) -> None:
    alice = add()
    sent = send(pool)
    clock.advance(30)
    smtp_server.fail_next("DATA", "554 5.6.0 Message refused")

    with pytest.raises(MessageRejected):
        send(pool)

    stored = storage.get(alice.id)
    assert stored.sent_count == 1
    assert stored.last_sent_at == sent.sent_at


# -- validation -------------------------------------------------------------------


def test_retry_after_is_the_shortest_wait_left(
    add: AccountFactory, pool: AccountPool
) -> None:
    add(ALICE, min_wait_time=60)
    add(BOB, min_wait_time=10)
    send(pool)
    send(pool)

    with pytest.raises(NoAccountAvailable) as info:
        send(pool)
    assert info.value.reason is NoAccountReason.ALL_WAITING
    assert info.value.retry_after == 10


def test_send_mail_builds_html_alternative_and_reply_to(
    smtp_server: SMTPTestServer, add: AccountFactory, pool: AccountPool
) -> None:
    add()
    pool.send_mail(
        subject="News",
        body="Plain words.",
        html="<p>Rich words.</p>",
        to=RECIPIENT,
        reply_to="Help Desk <help@example.com>",
        headers={"X-Campaign": "spring"},
    )

    (received,) = smtp_server.messages
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    html = message.get_body(preferencelist=("html",))
    plain = message.get_body(preferencelist=("plain",))
    assert html is not None and html.get_content().strip() == "<p>Rich words.</p>"
    assert plain is not None and plain.get_content().strip() == "Plain words."
    assert message["Reply-To"] == "Help Desk <help@example.com>"
    assert message["X-Campaign"] == "spring"
    assert received.rcpt_tos == (RECIPIENT,)


@pytest.mark.parametrize(
    "fields",
    [
        {"to": ["not-an-address"]},
        {"cc": ["bob@@example.com"]},
        {"to": []},
        {"subject": "Hi\r\nBcc: eve@example.org"},
        {"subject": "Hi\nX-Injected: yes"},
        {"headers": {"X-Campaign": "spring\rBcc: eve@example.org"}},
        pytest.param(
            {"headers": {"X-Campaign: spring\r\nBcc: eve@example.org\r\nX-Tag": "1"}},
        ),
        {"reply_to": "bad@@example.com"},
    ],
    ids=[
        "bad-to",
        "bad-cc",
        "no-recipient",
        "crlf-subject",
        "lf-subject",
        "cr-header",
        "crlf-header-name",
        "bad-reply-to",
    ],
)
def test_send_mail_refuses_invalid_input_before_sending_anything(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    add: AccountFactory,
    pool: AccountPool,
    fields: dict[str, Any],
) -> None:
    alice = add()

    with pytest.raises(ConfigurationError) as info:
        pool.send_mail(
            **{"subject": "Hello", "body": "Hi.", "to": [RECIPIENT], **fields}
        )

    assert isinstance(info.value, MailpoolError)
    assert isinstance(info.value, ValueError)
    assert smtp_server.connections == 0
    assert storage.get(alice.id) == alice


def compat32_message(**headers: str) -> EmailMessage:
    """A message built with the lenient compat32 policy, which lets CR/LF in."""
    message = EmailMessage(policy=compat32)
    for name, value in {"To": RECIPIENT, "Subject": "Hi", **headers}.items():
        message[name] = value
    message.set_payload("Hello.\n")
    return message


def default_message(**headers: str) -> EmailMessage:
    message = EmailMessage()
    for name, value in headers.items():
        message[name] = value
    message.set_content("Hello.\n")
    return message


@pytest.mark.parametrize(
    "message",
    [
        compat32_message(Subject="Hi\r\nBcc: eve@example.org"),
        compat32_message(To=f"{RECIPIENT}\r\nBcc: eve@example.org"),
        compat32_message(Cc="\nBcc: eve@example.org"),
        default_message(Subject="No recipient"),
        default_message(To="not an address"),
        pytest.param(
            default_message(
                To=RECIPIENT, **{"X-Tag: 1\r\nBcc: eve@example.org\r\nX": ""}
            ),
        ),
    ],
    ids=[
        "subject-injection",
        "to-injection",
        "cc-injection",
        "no-recipient",
        "bad-to",
        "header-name-injection",
    ],
)
def test_send_refuses_messages_with_header_injection_or_bad_recipients(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    add: AccountFactory,
    pool: AccountPool,
    message: EmailMessage,
) -> None:
    alice = add()

    with pytest.raises(ConfigurationError):
        pool.send(message)

    assert smtp_server.connections == 0
    assert storage.get(alice.id) == alice


def test_undisclosed_recipients_group_sends_to_the_bcc_recipients_only(
    smtp_server: SMTPTestServer, add: AccountFactory, pool: AccountPool
) -> None:
    add()
    message = default_message(To="undisclosed-recipients:;", Bcc="eve@example.org")

    result = pool.send(message)

    assert result.refused_recipients == ()
    [received] = smtp_server.messages
    assert received.rcpt_tos == ("eve@example.org",)


# -- connection tests -------------------------------------------------------------


def test_test_connection_by_id_or_email_reports_success(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    add: AccountFactory,
    pool: AccountPool,
) -> None:
    alice = add(password=USERS[ALICE])

    results = [pool.test_connection(alice.id), pool.test_connection(ALICE.upper())]

    for result in results:
        assert result.success
        assert result.account_email == ALICE
        assert f"{smtp_server.host}:{smtp_server.port}" in result.message
    assert smtp_server.auth_attempts == 2
    assert smtp_server.messages == []
    assert storage.get(alice.id) == alice


def test_failed_connection_test_reports_without_changing_the_account(
    storage: InMemoryStorage, add: AccountFactory, pool: AccountPool
) -> None:
    alice = add(password=WRONG_PASSWORD)

    result = pool.test_connection(ALICE)

    assert not result.success
    assert result.message.endswith(".")
    assert "535" in result.message
    assert WRONG_PASSWORD not in result.message
    assert storage.get(alice.id) == alice


def test_test_connections_covers_exactly_the_active_accounts_in_scope(
    add: AccountFactory, make_pool: PoolFactory
) -> None:
    add(ALICE, owner="acme")
    add(BOB, owner="acme", status=AccountStatus.INACTIVE)
    add(CAROL, owner="other")
    add("erin@example.com", owner="acme", status=AccountStatus.ERROR)
    add("frank@example.com", owner="acme")

    results = make_pool(owner="acme").test_connections()

    assert [r.account_email for r in results] == [ALICE, "frank@example.com"]
    assert all(r.success for r in results)


# -- usage and reset --------------------------------------------------------------


def test_usage_lists_todays_sends_and_remaining_quota(
    add: AccountFactory, make_pool: PoolFactory, clock: ManualClock
) -> None:
    add(ALICE, daily_limit=3)
    add(BOB, daily_limit=5)
    pool = make_pool(selector=first)
    send(pool)
    send(pool)

    def rows() -> list[tuple[str, int, int]]:
        return [(a.email, sent, left) for a, sent, left in pool.usage()]

    assert rows() == [(ALICE, 2, 1), (BOB, 0, 5)]
    clock.advance(days=1)
    assert rows() == [(ALICE, 0, 3), (BOB, 0, 5)]


def test_reset_daily_counts_lets_the_owners_accounts_send_again(
    storage: InMemoryStorage, add: AccountFactory, make_pool: PoolFactory
) -> None:
    add(ALICE, owner="acme", daily_limit=1)
    add(BOB, owner="acme", daily_limit=1)
    carol = add(CAROL, owner="other", daily_limit=1)
    send(make_pool(owner="other"))
    pool = make_pool(owner="acme")
    send(pool)
    send(pool)
    with pytest.raises(NoAccountAvailable):
        send(pool)

    assert pool.reset_daily_counts() == 2

    assert {send(pool).account_email for _ in range(2)} == {ALICE, BOB}
    assert storage.get(carol.id).sent_count == 1


@pytest.mark.parametrize("scope", [{"tag": "spring"}, {"account_ids": ["id-alice"]}])
def test_reset_daily_counts_refuses_a_pool_scoped_by_tag_or_ids(
    make_pool: PoolFactory, scope: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError, match="reset_daily_counts"):
        make_pool(**scope).reset_daily_counts()


# -- secrets and logging ----------------------------------------------------------


def test_logs_reprs_and_results_never_show_passwords_or_tokens(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    add: AccountFactory,
    make_pool: PoolFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets = [USERS[ALICE], "bob-WRONG-S3cret", "ya29.carol-T0ken"]
    alice = add(ALICE, password=secrets[0])
    bob = add(BOB, password=secrets[1])
    # The relay offers no XOAUTH2, so the token is sent and refused.
    carol = add(CAROL, oauth2=OAuth2Credentials(access_token=secrets[2]))
    caplog.set_level(logging.DEBUG, logger="mailpool")

    failing = make_pool(account_ids=[bob.id, carol.id], selector=first)
    with pytest.raises(AuthenticationError) as info:
        send(failing)
    smtp_server.fail_next("DATA", "451 4.3.0 Try again later")
    working = make_pool(account_ids=[alice.id])
    result = send(working)
    checks = [make_pool().test_connection(a.id) for a in (alice, bob, carol)]

    assert result.attempts == 2
    assert not checks[1].success and not checks[2].success
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("mailpool")]
    assert any("retrying" in line for line in logged)
    assert any(BOB in line and "535" in line for line in logged)
    shown = [
        caplog.text,
        *logged,
        str(info.value),
        repr(info.value),
        repr(failing),
        repr(working),
        str(result),
        repr(result),
        *map(str, checks),
        *map(repr, storage.accounts()),
        *map(str, storage.accounts()),
    ]
    for secret in secrets:
        assert not [text for text in shown if secret in text], secret


# -- closing ----------------------------------------------------------------------


def test_leaving_the_with_block_quits_the_pools_sessions(
    smtp_server: SMTPTestServer, add: AccountFactory, make_pool: PoolFactory
) -> None:
    add()
    marker = "221 2.0.0 Bye from the fault queue"
    with make_pool() as pool:
        send(pool)
        smtp_server.fail_next("QUIT", marker)

    # The pool's QUIT took the queued reply, so a new client gets the normal one.
    probe = smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5.0)
    try:
        code, text = probe.quit()
    finally:
        probe.close()
    assert (code, text.decode()) != (221, marker[4:])
    assert smtp_server.connections == 2


# -- delivery safety ---------------------------------------------------------------


@pytest.mark.parametrize("fault", ["stall", "drop"])
def test_reply_lost_after_the_body_counts_and_is_never_resent(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    add: AccountFactory,
    make_pool: PoolFactory,
    sleeps: list[float],
    fault: str,
) -> None:
    alice, bob = add(ALICE), add(BOB)
    if fault == "stall":  # the server queues the message but answers too late
        smtp_server.stall_next("DATA_END", 6.0)
    else:
        smtp_server.drop_next("DATA_END")
    pool = make_pool(selector=first, transport=SMTPTransport(timeout=2.0))

    with pytest.raises(DeliveryUnknown) as info:
        send(pool)

    assert info.value.account_id == alice.id
    assert not isinstance(info.value, TemporarySendError)
    assert sleeps == []  # no retry
    assert storage.get(alice.id).sent_count == 1  # it may have been delivered
    assert storage.get(bob.id).sent_count == 0  # no failover
    assert smtp_server.connections == 1  # neither retried nor failed over


def test_a_custom_transport_returning_none_is_a_success(
    storage: InMemoryStorage, add: AccountFactory
) -> None:
    class Quiet(RecordingTransport):
        def send(self, account: Account, message: EmailMessage, /) -> Sequence[str]:
            super().send(account, message)
            return None  # type: ignore[return-value]

    alice = add(ALICE)
    result = send(AccountPool(storage, transport=Quiet()))
    assert result.refused_recipients == ()
    assert storage.get(alice.id).sent_count == 1


def test_a_selector_must_choose_among_the_candidates(
    storage: InMemoryStorage, add: AccountFactory, make_pool: PoolFactory
) -> None:
    outsider = add(BOB, owner="other")
    add(ALICE, owner="acme")
    pool = make_pool(owner="acme", selector=lambda candidates: outsider)

    with pytest.raises(ConfigurationError, match="not one of the candidates"):
        send(pool)

    assert storage.get(outsider.id).sent_count == 0


def test_auth_failure_does_not_flag_credentials_fixed_meanwhile(
    storage: InMemoryStorage, add: AccountFactory
) -> None:
    alice = add(ALICE)

    class FixedDuringSend(RecordingTransport):
        """Refuses the login while an admin stores a new password."""

        def send(self, account: Account, message: EmailMessage, /) -> Sequence[str]:
            fixed = account.smtp.model_copy(update={"password": SecretStr("new")})
            storage.update(storage.get(account.id).replace(smtp=fixed))
            raise AuthenticationError("535 bad credentials", account_id=account.id)

    with pytest.raises(AuthenticationError):
        send(AccountPool(storage, transport=FixedDuringSend(), failover=0))

    assert storage.get(alice.id).status is AccountStatus.ACTIVE


def test_deferred_and_refused_recipients_together_are_temporary(
    smtp_server: SMTPTestServer, add: AccountFactory, make_pool: PoolFactory
) -> None:
    add(ALICE)
    smtp_server.reject_recipient("later@example.net", "450 4.2.0 Mailbox busy")
    smtp_server.reject_recipient("gone@example.net", "550 5.1.1 No such user")
    pool = make_pool(failover=0, retry=RetryPolicy(attempts=1))

    with pytest.raises(TemporarySendError) as info:
        pool.send_mail(
            subject="Hi", body=".", to=["later@example.net", "gone@example.net"]
        )

    assert not isinstance(info.value, MessageRejected)
    assert "gone@example.net" in str(info.value)


@pytest.mark.parametrize(
    ("failover", "tried"), [(2, [ALICE, BOB, CAROL]), (1, [ALICE, BOB])]
)
def test_failover_tries_that_many_other_accounts_then_raises_the_last_error(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    add: AccountFactory,
    make_pool: PoolFactory,
    failover: int,
    tried: list[str],
) -> None:
    accounts = [add(ALICE), add(BOB), add(CAROL)]
    smtp_server.fail_next("DATA", "451 4.3.0 Try again later", times=3)
    pool = make_pool(selector=first, failover=failover, retry=RetryPolicy(attempts=1))

    with pytest.raises(TemporarySendError) as info:
        send(pool)

    by_email = {account.email: account for account in accounts}
    assert info.value.account_id == by_email[tried[-1]].id
    assert smtp_server.connections == len(tried)
    assert [storage.get(account.id).sent_count for account in accounts] == [0, 0, 0]


def test_one_message_id_is_kept_across_failover(
    storage: InMemoryStorage, add: AccountFactory
) -> None:
    add(ALICE)
    add(BOB)

    class FirstFails(RecordingTransport):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def send(self, account: Account, message: EmailMessage, /) -> Sequence[str]:
            self.seen.append(str(message["Message-ID"]))
            if len(self.seen) == 1:
                raise TemporarySendError("451 later", account_id=account.id)
            return super().send(account, message)

    transport = FirstFails()
    pool = AccountPool(
        storage, transport=transport, selector=first, retry=RetryPolicy(attempts=1)
    )
    result = send(pool)

    assert len(transport.seen) == 2 and transport.seen[0] == transport.seen[1]
    assert result.message_id == transport.seen[0]


def test_an_unexpected_error_keeps_the_reservation_and_does_not_fail_over(
    storage: InMemoryStorage, add: AccountFactory
) -> None:
    alice, bob = add(ALICE), add(BOB)

    class Broken(RecordingTransport):
        def send(self, account: Account, message: EmailMessage, /) -> Sequence[str]:
            raise RuntimeError("bug in a custom transport")

    with pytest.raises(RuntimeError):
        send(AccountPool(storage, transport=Broken(), selector=first))

    assert storage.get(alice.id).sent_count == 1  # counted: sending past is worse
    assert storage.get(bob.id).sent_count == 0


def test_losing_a_reservation_race_picks_another_account(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    add: AccountFactory,
    make_pool: PoolFactory,
    clock: ManualClock,
) -> None:
    alice, bob = add(ALICE, daily_limit=1), add(BOB, daily_limit=1)

    def rival_takes_it_first(candidates: Sequence[Account]) -> Account:
        chosen = candidates[0]
        if chosen.id == alice.id:  # another worker takes Alice's last unit now
            taken = storage.claim(Claim(Scope(), clock(), account_id=alice.id))
            assert taken is not None
        return chosen

    result = send(make_pool(selector=rival_takes_it_first))

    assert result.account_id == bob.id
    assert [m.mail_from for m in smtp_server.messages] == [BOB]
