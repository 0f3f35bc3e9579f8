"""Many threads sharing one pool never send past the accounts' daily limits."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from mailpool import (
    Account,
    AccountPool,
    InMemoryStorage,
    NoAccountAvailable,
    NoAccountReason,
    RandomSelector,
    RetryPolicy,
    SendResult,
    SMTPSettings,
    SMTPTransport,
)
from mailpool.testing import ManualClock
from smtpserver import SMTPTestServer

THREADS = 50
SENDERS = ("alice@example.com", "bob@example.com", "carol@example.com")
DAILY_LIMIT = 10


def test_fifty_threads_on_one_pool_send_exactly_the_daily_limits(
    smtp_server: SMTPTestServer,
) -> None:
    storage = InMemoryStorage()
    smtp = SMTPSettings(host=smtp_server.host, port=smtp_server.port, use_tls=False)
    for email in SENDERS:
        storage.add(
            Account(email=email, smtp=smtp, daily_limit=DAILY_LIMIT, min_wait_time=0)
        )
    start = threading.Barrier(THREADS, timeout=30)

    with AccountPool(
        storage,
        selector=RandomSelector(2026),
        retry=RetryPolicy(attempts=1, jitter=False),  # a failure must show, not heal
        transport=SMTPTransport(timeout=10.0),
        clock=ManualClock(),
    ) as pool:

        def send(index: int) -> SendResult | NoAccountAvailable:
            start.wait()
            try:
                return pool.send_mail(
                    subject=f"Message {index}",
                    body="Hi.",
                    to=["dave@example.net"],
                    wait=30,  # for a send slot: each account sends one at a time
                )
            except NoAccountAvailable as exc:
                return exc

        with ThreadPoolExecutor(max_workers=THREADS) as executor:
            outcomes = list(executor.map(send, range(THREADS)))
        usage = {row.account.email: row.sent_today for row in pool.usage()}

    results = [o for o in outcomes if isinstance(o, SendResult)]
    refusals = [o for o in outcomes if isinstance(o, NoAccountAvailable)]
    assert len(results) == 30
    assert len(refusals) == 20
    assert {r.reason for r in refusals} == {NoAccountReason.ALL_AT_LIMIT}
    assert len(smtp_server.messages) == 30
    assert len({m.message["Message-ID"] for m in smtp_server.messages}) == 30
    assert Counter(m.mail_from for m in smtp_server.messages) == dict.fromkeys(
        SENDERS, DAILY_LIMIT
    )
    assert Counter(r.account_email for r in results) == dict.fromkeys(
        SENDERS, DAILY_LIMIT
    )
    assert usage == dict.fromkeys(SENDERS, DAILY_LIMIT)
