"""Reply classes: each driven through a real SMTP server's replies (no patching)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailpool import (
    Account,
    AccountBroken,
    AccountPool,
    AccountQuotaExceeded,
    AccountStatus,
    AccountThrottled,
    AuthenticationError,
    HealthPolicy,
    InMemoryStorage,
    MessageRejected,
    NoAccountAvailable,
    NoAccountReason,
    ReplyRules,
    SMTPSettings,
    SMTPTransport,
    TemporarySendError,
)
from mailpool.models import PauseKind
from mailpool.replies import DEFAULT_RULES, Reply, ReplyClass, ReplyRule, Stage
from mailpool.testing import ManualClock
from pooltools import ALICE, BOB, RECIPIENT, AccountFactory, PoolFactory, first, send
from smtpserver import SMTPTestServer

START = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
MIDNIGHT = datetime(2026, 1, 2, 0, 0, tzinfo=timezone.utc)


def _reply(example: str, stage: Stage) -> Reply:
    code, _, text = example.partition(" ")
    return Reply(int(code), text, stage)


# -- the table ------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule", [rule for rule in DEFAULT_RULES if rule.example], ids=lambda r: r.example
)
def test_every_known_reply_is_classified_by_its_own_rule(rule: ReplyRule) -> None:
    stage = min(rule.stages, key=lambda s: s.value) if rule.stages else Stage.MAIL
    reply = _reply(rule.example, stage)
    assert ReplyRules().rule_for(reply) is rule
    assert rule.source


@pytest.mark.parametrize(
    ("reply", "stage", "meaning"),
    [
        ("554 5.7.1 <d@example.net>: Client host rejected: Access denied", "rcpt",
         "account_broken"),
        ("553 5.7.1 <a@x.org>: Sender address rejected: not owned by user b@x.org",
         "rcpt", "account_broken"),
        ("552 5.3.4 Message size exceeds fixed limit", "mail", "message"),
        ("550 5.4.5 Daily user sending quota exceeded.", "mail", "account_quota"),
        ("550 5.4.5 Daily SMTP relay limit exceeded for user.", "end_of_data",
         "account_quota"),
        ("554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
         "end_of_data", "account_quota"),
        ("421 4.7.0 Try again later, closing connection.", "mail",
         "account_throttled"),
        ("450 4.7.1 Error: too much mail from 192.0.2.1", "rcpt",
         "account_throttled"),
        ("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
         "end_of_data", "account_throttled"),
        ("452 4.5.3 Your message has too many recipients.", "rcpt",
         "too_many_recipients"),
        ("550 5.1.1 The email account that you tried to reach does not exist.",
         "rcpt", "recipient"),
        ("550 5.7.1 Message rejected as spam.", "end_of_data", "message"),
        ("535 5.7.8 Username and Password not accepted.", "auth", "account_broken"),
        ("550 5.7.30 Basic authentication is not supported.", "auth",
         "account_broken"),
        ("451 4.3.0 Temporary lookup failure", "rcpt", "transient"),
        ("554 No SMTP service here", "connect", "account_broken"),
    ],
)  # fmt: skip
def test_real_replies_mean_what_the_issue_says(
    reply: str, stage: str, meaning: str
) -> None:
    assert ReplyRules().classify(_reply(reply, Stage(stage))) is ReplyClass(meaning)


def test_enhanced_status_code_is_read_from_the_text() -> None:
    assert Reply(550, "5.4.5 Daily user sending quota", Stage.MAIL).enhanced == "5.4.5"
    assert Reply(550, "No such user", Stage.RCPT).enhanced is None


def test_own_rules_come_first_and_defaults_can_be_left_out() -> None:
    rule = ReplyRule(ReplyClass.ACCOUNT_THROTTLED, code=550, text="rate limited")
    reply = Reply(550, "5.7.1 rate limited", Stage.MAIL)
    assert ReplyRules([rule]).classify(reply) is ReplyClass.ACCOUNT_THROTTLED
    assert ReplyRules().classify(reply) is ReplyClass.ACCOUNT_BROKEN
    bare = ReplyRules(defaults=False)
    assert bare.classify(Reply(452, "4.5.3 too many", Stage.RCPT)) is (
        ReplyClass.TRANSIENT
    )
    assert bare.classify(Reply(550, "x", Stage.RCPT)) is ReplyClass.ACCOUNT_BROKEN


def test_every_known_reply_is_in_the_docs_table() -> None:
    page = (Path(__file__).parent.parent / "docs" / "replies.md").read_text()
    for rule in DEFAULT_RULES:
        if rule.example:
            assert rule.example in page, rule.example


# -- through a real server --------------------------------------------------------


@pytest.fixture
def two(add: AccountFactory) -> None:
    add(ALICE)
    add(BOB)


@pytest.mark.parametrize(
    ("point", "reply"),
    [
        ("RCPT", "554 5.7.1 <dave@example.net>: Client host rejected: Access denied"),
        ("RCPT", "553 5.7.1 <alice@example.com>: Sender address rejected: not "
                 "owned by user alice"),
        ("MAIL", "553 5.1.8 <alice@example.com>: Sender address rejected: Domain "
                 "not found"),
    ],
)  # fmt: skip
def test_account_broken_sets_error_and_fails_over(
    two: None,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
    point: str,
    reply: str,
) -> None:
    smtp_server.fail_next(point, reply)
    result = send(make_pool(selector=first))
    assert result.account_email == BOB
    alice = storage.get_by_email(ALICE)
    assert alice.status is AccountStatus.ERROR
    assert alice.status_reason is not None and reply[:9] in alice.status_reason
    assert alice.last_error_at == START
    assert alice.sent_count == 0  # the failed send does not count
    assert len(smtp_server.messages) == 1


@pytest.fixture
def transport() -> Iterator[SMTPTransport]:
    transport = SMTPTransport(timeout=5)
    yield transport
    transport.close()


def test_account_broken_error_type(
    add: AccountFactory, smtp_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    account = add(ALICE)
    smtp_server.fail_next("RCPT", "554 5.7.1 <d@x.net>: Relay access denied")
    with pytest.raises(AccountBroken) as err:
        transport.send(account, _message())
    assert not isinstance(err.value, AuthenticationError)
    assert err.value.reply_class == "account_broken"
    assert err.value.smtp_code == 554


def test_message_too_big_at_mail_is_refused_without_failover(
    two: None,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
) -> None:
    smtp_server.fail_next("MAIL", "552 5.3.4 Message size exceeds fixed limit")
    with pytest.raises(MessageRejected) as err:
        send(make_pool(selector=first))
    assert err.value.reply_class == "message"
    assert smtp_server.commands.count("MAIL") == 1
    assert all(a.status is AccountStatus.ACTIVE for a in storage.accounts())


def test_refused_recipient_is_not_failed_over(
    two: None, make_pool: PoolFactory, smtp_server: SMTPTestServer
) -> None:
    smtp_server.reject_recipient(RECIPIENT, "550 5.1.1 No such user")
    with pytest.raises(MessageRejected) as err:
        send(make_pool(selector=first))
    assert err.value.recipients == (RECIPIENT,)
    assert smtp_server.commands.count("MAIL") == 1


@pytest.mark.parametrize(
    ("point", "reply"),
    [
        ("MAIL", "550 5.4.5 Daily user sending quota exceeded."),
        ("DATA_END", "550 5.4.5 Daily SMTP relay limit exceeded for user."),
        ("DATA_END", "554 5.2.0 STOREDRV.Submission.Exception:"
                     "SubmissionQuotaExceededException"),
    ],
)  # fmt: skip
def test_quota_reply_holds_the_account_until_its_reset_and_fails_over(
    two: None,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
    clock: ManualClock,
    point: str,
    reply: str,
) -> None:
    pool = make_pool(selector=first)
    smtp_server.fail_next(point, reply)
    assert send(pool).account_email == BOB  # alice was tried first
    alice = storage.get_by_email(ALICE)
    assert alice.status is AccountStatus.ACTIVE
    assert alice.pause_kind is PauseKind.QUOTA
    assert alice.paused_until == MIDNIGHT
    assert alice.sent_count == 0  # the local count is lower, it still holds
    clock.advance(3600)
    assert send(pool).account_email == BOB  # still held
    clock.current = MIDNIGHT
    assert send(pool).account_email == ALICE


@pytest.mark.parametrize(
    ("point", "reply"),
    [
        ("MAIL", "421 4.7.0 Try again later, closing connection."),
        ("RCPT", "450 4.7.1 Error: too much mail from 127.0.0.1"),
        ("DATA_END", "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"),
    ],
)
def test_throttled_account_cools_down_and_fails_over(
    two: None,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
    clock: ManualClock,
    point: str,
    reply: str,
) -> None:
    pool = make_pool(selector=first, health=HealthPolicy(cool_down=120))
    smtp_server.fail_next(point, reply)
    assert send(pool).account_email == BOB
    alice = storage.get_by_email(ALICE)
    assert alice.pause_kind is PauseKind.THROTTLED
    assert alice.paused_until == START + timedelta(seconds=120)
    assert alice.status is AccountStatus.ACTIVE
    clock.advance(60)
    assert send(pool).account_email == BOB
    clock.advance(61)
    assert send(pool).account_email == ALICE


def test_throttling_is_stored_so_another_pool_respects_it(
    two: None, make_pool: PoolFactory, smtp_server: SMTPTestServer
) -> None:
    smtp_server.fail_next("MAIL", "421 4.7.0 Try again later, closing connection.")
    assert send(make_pool(selector=first)).account_email == BOB
    other = make_pool(selector=first)  # another worker on the same storage
    assert send(other).account_email == BOB


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("421 4.7.0 Try again later, closing connection.", AccountThrottled),
        ("550 5.4.5 Daily user sending quota exceeded.", AccountQuotaExceeded),
    ],
)
def test_the_transport_raises_the_error_of_the_reply_class(
    add: AccountFactory,
    smtp_server: SMTPTestServer,
    transport: SMTPTransport,
    reply: str,
    error: type[Exception],
) -> None:
    account = add(ALICE)
    smtp_server.fail_next("MAIL", reply)
    with pytest.raises(error):
        transport.send(account, _message())


def test_no_account_available_says_accounts_are_held_with_retry_after(
    add: AccountFactory, make_pool: PoolFactory, smtp_server: SMTPTestServer
) -> None:
    add(ALICE)
    pool = make_pool()
    smtp_server.fail_next("MAIL", "550 5.4.5 Daily user sending quota exceeded.")
    with pytest.raises(AccountQuotaExceeded):
        send(pool)
    with pytest.raises(NoAccountAvailable) as err:
        send(pool)
    assert err.value.reason is NoAccountReason.ALL_PAUSED
    assert err.value.retry_after == (MIDNIGHT - START).total_seconds()
    assert "held at the provider's quota" in str(err.value)


def test_no_account_available_says_accounts_are_cooling_down(
    add: AccountFactory, make_pool: PoolFactory, smtp_server: SMTPTestServer
) -> None:
    add(ALICE)
    pool = make_pool(health=HealthPolicy(cool_down=90))
    smtp_server.fail_next("RCPT", "450 4.7.1 Error: too much mail from 127.0.0.1")
    with pytest.raises(AccountThrottled):
        send(pool)
    with pytest.raises(NoAccountAvailable) as err:
        send(pool)
    assert err.value.reason is NoAccountReason.ALL_PAUSED
    assert err.value.retry_after == 90
    assert "cooling down" in str(err.value)


def test_too_many_recipients_go_in_further_transactions(
    add: AccountFactory, make_pool: PoolFactory, smtp_server: SMTPTestServer
) -> None:
    add(ALICE)
    smtp_server.max_recipients = 2
    to = [f"r{n}@example.net" for n in range(5)]
    result = make_pool().send_mail(subject="Hi", body="Hello.", to=to)
    assert result.refused_recipients == ()
    received = smtp_server.wait_for_messages(3)
    assert [m.rcpt_tos for m in received] == [
        ("r0@example.net", "r1@example.net"),
        ("r2@example.net", "r3@example.net"),
        ("r4@example.net",),
    ]
    assert smtp_server.commands.count("DATA_END") == 3


def test_transient_reply_is_retried_on_the_same_account(
    two: None, make_pool: PoolFactory, smtp_server: SMTPTestServer
) -> None:
    smtp_server.fail_next("MAIL", "451 4.3.0 Temporary lookup failure")
    result = send(make_pool(selector=first))
    assert result.account_email == ALICE
    assert result.attempts == 2


def test_transient_error_type(
    add: AccountFactory, smtp_server: SMTPTestServer, transport: SMTPTransport
) -> None:
    account = add(ALICE)
    smtp_server.fail_next("RCPT", "451 4.3.0 Temporary lookup failure")
    with pytest.raises(TemporarySendError):
        transport.send(account, _message())


def test_user_rules_override_the_defaults_through_the_transport(
    two: None,
    make_pool: PoolFactory,
    storage: InMemoryStorage,
    smtp_server: SMTPTestServer,
) -> None:
    rules = ReplyRules(
        [ReplyRule(ReplyClass.ACCOUNT_THROTTLED, code=550, text="rate limited")]
    )
    pool = make_pool(selector=first, transport=SMTPTransport(timeout=5, replies=rules))
    smtp_server.fail_next("MAIL", "550 5.7.1 rate limited, slow down")
    assert send(pool).account_email == BOB
    alice = storage.get_by_email(ALICE)
    assert alice.status is AccountStatus.ACTIVE
    assert alice.pause_kind is PauseKind.THROTTLED


def test_refused_login_is_still_an_authentication_error(
    smtp_starttls_server: SMTPTestServer,
    client_ssl_context: ssl.SSLContext,
    storage: InMemoryStorage,
    clock: ManualClock,
) -> None:
    settings = SMTPSettings(
        host=smtp_starttls_server.host,
        port=smtp_starttls_server.port,
        password="wrong-password",
    )
    storage.add(Account(email=ALICE, smtp=settings))
    transport = SMTPTransport(timeout=5, ssl_context=client_ssl_context)
    with (
        AccountPool(storage, transport=transport, clock=clock) as pool,
        pytest.raises(AuthenticationError) as err,
    ):
        send(pool)
    assert err.value.reply_class == "account_broken"
    assert storage.get_by_email(ALICE).status is AccountStatus.ERROR


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = ALICE
    message["To"] = RECIPIENT
    message["Subject"] = "Hi"
    message.set_content("Hello.")
    return message
