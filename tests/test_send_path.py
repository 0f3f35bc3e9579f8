"""The send path of 0.2: message prepared once, Date header, leases
(max_in_flight, expiry, min_wait_time from the delivery), send(wait=...),
send_many and the bounded sample custom selectors see."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from mailpool import (
    Account,
    AccountPool,
    Claim,
    ConfigurationError,
    InMemoryStorage,
    MailpoolError,
    NoAccountAvailable,
    NoAccountReason,
    Scope,
    SendResult,
    SMTPSettings,
    SMTPTransport,
    TemporarySendError,
)
from mailpool.storage import CANDIDATE_SAMPLE
from mailpool.testing import ManualClock, RecordingTransport
from pooltools import ALICE, BOB, CAROL, RECIPIENT, AccountFactory, PoolFactory, send
from smtpserver import SMTPTestServer


def message(subject: str = "Hello", to: str = RECIPIENT) -> EmailMessage:
    msg = EmailMessage()
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Plain text.")
    msg.add_alternative("<p>HTML</p>", subtype="html")
    return msg


def headers_of(msg: EmailMessage) -> list[list[tuple[str, str]]]:
    """Every part's headers, as text: what a send must leave untouched."""
    return [[(k, str(v)) for k, v in part.items()] for part in msg.walk()]


# -- the message ----------------------------------------------------------------


def test_a_missing_date_header_is_added_and_the_message_given_is_untouched(
    smtp_server: SMTPTestServer,
    add: AccountFactory,
    pool: AccountPool,
    clock: ManualClock,
) -> None:
    add(sender_name="Alice Example")
    original = message()
    before = headers_of(original)

    result = pool.send(original)

    assert headers_of(original) == before
    assert original["Date"] is None and original["From"] is None
    received = smtp_server.messages[0].message
    assert parsedate_to_datetime(str(received["Date"])) == clock()
    assert str(received["From"]) == f"Alice Example <{ALICE}>"
    assert str(received["Message-ID"]) == result.message_id
    assert received.get_body(("html",)) is not None


def test_a_date_header_given_is_kept(
    smtp_server: SMTPTestServer, add: AccountFactory, pool: AccountPool
) -> None:
    add()
    dated = message()
    dated["Date"] = "Mon, 05 Jan 2026 10:00:00 +0100"

    pool.send(dated)

    assert smtp_server.messages[0].message.get_all("Date") == [
        "Mon, 05 Jan 2026 10:00:00 +0100"
    ]


def test_retries_and_failover_send_the_same_message_id_and_date(
    smtp_server: SMTPTestServer, add: AccountFactory, make_pool: PoolFactory
) -> None:
    add(ALICE), add(BOB)
    transport = RecordingTransport()
    failing = {"left": 2}

    class FlakyFirst(RecordingTransport):
        def send(self, account: Account, msg: EmailMessage, /) -> Sequence[str]:
            transport.send(account, msg)
            if failing["left"]:
                failing["left"] -= 1
                raise TemporarySendError("451 4.3.0 try again")
            return ()

    pool = make_pool(transport=FlakyFirst(), failover=1)
    pool.send(message())

    sent = transport.sent
    assert len(sent) == 3
    assert len({str(s.message["Message-ID"]) for s in sent}) == 1
    assert len({str(s.message["Date"]) for s in sent}) == 1


# -- leases -----------------------------------------------------------------------


def test_an_account_busy_with_a_send_is_not_claimed_twice(
    storage: InMemoryStorage, add: AccountFactory, make_pool: PoolFactory
) -> None:
    alice = add()
    pool = make_pool()
    assert storage.claim(Claim(Scope(), pool.now(), account_id=alice.id)) is not None

    with pytest.raises(NoAccountAvailable) as info:
        send(pool)

    assert info.value.reason is NoAccountReason.ALL_BUSY
    assert info.value.retry_after == pytest.approx(pool.lease_timeout)
    assert "max_in_flight" in str(info.value)


def test_max_in_flight_lets_that_many_sends_of_one_account_run_at_once(
    smtp_server: SMTPTestServer,
    storage: InMemoryStorage,
    add: AccountFactory,
    make_pool: PoolFactory,
) -> None:
    add(max_in_flight=2)
    pool = make_pool()
    hold = smtp_server.hold_next("DATA")
    first = threading.Thread(target=send, args=(pool,))
    first.start()
    try:
        hold.wait_reached()
        # The second slot is free while the first send hangs ...
        other = storage.claim(Claim(Scope(), pool.now()))
        assert other is not None
        with pytest.raises(NoAccountAvailable) as info:
            send(pool)  # ... and now both are taken.
        assert info.value.reason is NoAccountReason.ALL_BUSY
        storage.complete(other, pool.now())
    finally:
        hold.release()
        first.join()
    assert send(pool).account_email == ALICE
    assert len(smtp_server.messages) == 2


def test_an_abandoned_lease_frees_the_account_after_the_lease_timeout(
    storage: InMemoryStorage,
    add: AccountFactory,
    make_pool: PoolFactory,
    clock: ManualClock,
) -> None:
    alice = add()
    pool = make_pool(lease_timeout=60, sleep=clock.sleep)
    # A worker claimed the account and died: its lease is never ended.
    assert storage.claim(Claim(Scope(), clock(), lease_seconds=60)) is not None

    result = pool.send(message(), wait=120)

    assert result.account_id == alice.id
    assert result.sent_at >= clock() - timedelta(seconds=1)
    assert (result.sent_at - pool.now()).total_seconds() <= 0
    stored = storage.get(alice.id)
    assert (stored.sent_count, stored.in_flight) == (2, 0)  # the dead one counts


# -- send(wait=...) -----------------------------------------------------------------


@pytest.fixture
def waiting_pool(make_pool: PoolFactory, clock: ManualClock) -> AccountPool:
    return make_pool(sleep=clock.sleep)


def test_send_waits_for_the_minimum_wait_to_pass(
    add: AccountFactory, waiting_pool: AccountPool, clock: ManualClock
) -> None:
    add(min_wait_time=60)
    first = send(waiting_pool)
    with pytest.raises(NoAccountAvailable) as info:
        send(waiting_pool)
    assert info.value.reason is NoAccountReason.ALL_WAITING

    second = waiting_pool.send(message(), wait=90)

    assert (second.sent_at - first.sent_at).total_seconds() == pytest.approx(60)


def test_send_waits_no_longer_than_told(
    add: AccountFactory, waiting_pool: AccountPool, clock: ManualClock
) -> None:
    add(min_wait_time=60)
    send(waiting_pool)
    start = clock()

    with pytest.raises(NoAccountAvailable) as info:
        waiting_pool.send(message(), wait=10)

    assert info.value.reason is NoAccountReason.ALL_WAITING
    assert (clock() - start).total_seconds() == pytest.approx(10)


def test_send_never_waits_for_the_next_day(
    add: AccountFactory, waiting_pool: AccountPool, clock: ManualClock
) -> None:
    add(daily_limit=1)
    send(waiting_pool)
    start = clock()

    with pytest.raises(NoAccountAvailable) as info:
        waiting_pool.send(message(), wait=24 * 3600)

    assert info.value.reason is NoAccountReason.ALL_AT_LIMIT
    assert clock() == start


@pytest.mark.parametrize("wait", [-1.0, float("nan")])
def test_an_impossible_wait_is_a_configuration_error(
    add: AccountFactory, pool: AccountPool, wait: float
) -> None:
    add()
    with pytest.raises(ConfigurationError, match="wait"):
        pool.send(message(), wait=wait)


def test_min_wait_counts_from_the_delivery_as_the_server_sees_it(
    smtp_server: SMTPTestServer, storage: InMemoryStorage
) -> None:
    # Real time: a slow connect (0.5 s) must not shorten the gap between the
    # arrivals of two messages of one account below its minimum wait.
    smtp = SMTPSettings(host=smtp_server.host, port=smtp_server.port, use_tls=False)
    storage.add(Account(email=ALICE, smtp=smtp, min_wait_time=0.3))
    smtp_server.stall_next("CONNECT", 0.5, times=2)
    with AccountPool(storage, transport=SMTPTransport(reuse_connections=False)) as pool:
        senders = [
            threading.Thread(
                target=pool.send, args=(message(f"m{n}"),), kwargs={"wait": 10}
            )
            for n in range(2)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()

    arrivals = sorted(m.received_at for m in smtp_server.wait_for_messages(2))
    assert arrivals[1] - arrivals[0] >= 0.3


# -- send_many ----------------------------------------------------------------------


def test_send_many_returns_every_outcome_in_order(
    smtp_server: SMTPTestServer, add: AccountFactory, make_pool: PoolFactory
) -> None:
    for email in (ALICE, BOB, CAROL):
        add(email, daily_limit=1)
    batch = [message(f"m{n}") for n in range(5)]
    batch[1].replace_header("To", "not an address")
    seen: list[int] = []
    lock = threading.Lock()

    def progress(index: int, outcome: SendResult | MailpoolError) -> None:
        with lock:
            seen.append(index)

    outcomes = make_pool().send_many(batch, concurrency=3, wait=5, on_result=progress)

    assert sorted(seen) == list(range(5))
    assert isinstance(outcomes[1], ConfigurationError)
    sent = [o for o in outcomes if isinstance(o, SendResult)]
    refused = [o for o in outcomes if isinstance(o, NoAccountAvailable)]
    assert len(sent) == 3 and len(refused) == 1
    assert refused[0].reason is NoAccountReason.ALL_AT_LIMIT
    by_subject = {str(m.message["Subject"]): m for m in smtp_server.messages}
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, SendResult):
            received = by_subject[f"m{index}"]
            assert str(received.message["Message-ID"]) == outcome.message_id
            assert received.mail_from == outcome.account_email


def test_send_many_with_one_thread_sends_in_order(
    add: AccountFactory, make_pool: PoolFactory
) -> None:
    add()
    transport = RecordingTransport()
    outcomes = make_pool(transport=transport).send_many(
        [message(f"m{n}") for n in range(4)]
    )
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert [str(s.message["Subject"]) for s in transport.sent] == [
        "m0",
        "m1",
        "m2",
        "m3",
    ]


def test_send_many_refuses_a_concurrency_below_one(pool: AccountPool) -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        pool.send_many([message()], concurrency=0)


# -- custom selectors -----------------------------------------------------------


def test_a_custom_selector_sees_a_bounded_sample_of_eligible_accounts(
    storage: InMemoryStorage, make_pool: PoolFactory, clock: ManualClock
) -> None:
    smtp = SMTPSettings(host="127.0.0.1", port=25, use_tls=False)
    today = clock().date()
    # 200 accounts, the first 50 at their daily limit.
    storage.add_many(
        Account(
            email=f"s{n:03}@example.com",
            smtp=smtp,
            min_wait_time=0,
            daily_limit=5,
            sent_count=5 if n < 50 else 0,
            count_day=today,
        )
        for n in range(200)
    )
    seen: list[Sequence[Account]] = []

    def first_of_sample(candidates: Sequence[Account]) -> Account:
        seen.append(candidates)
        return candidates[0]

    pool = make_pool(selector=first_of_sample, transport=RecordingTransport())
    for _ in range(20):
        send(pool)

    assert len(seen) == 20
    assert all(0 < len(sample) <= CANDIDATE_SAMPLE for sample in seen)
    assert all(a.is_eligible(clock()) for sample in seen for a in sample)
    # A sample, not the first accounts by email: over 20 sends it varied.
    assert len({a.id for sample in seen for a in sample}) > CANDIDATE_SAMPLE
