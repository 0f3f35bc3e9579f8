"""``python -m mailpool demo``: a pool sending to a local SMTP server it starts."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from mailpool.errors import ConfigurationError, NoAccountAvailable
from mailpool.models import Account, SMTPSettings
from mailpool.pool import AccountPool
from mailpool.selection import RandomSelector
from mailpool.storage.memory import InMemoryStorage
from mailpool.testing import ManualClock

__all__ = ["run_demo"]

_ACCOUNTS = (
    ("sales", "Sales Team", 3),
    ("support", "Support Desk", 2),
    ("news", "Newsletter", 4),
)


@contextmanager
def local_smtp_server() -> Iterator[tuple[int, Counter[str]]]:
    """An aiosmtpd server on 127.0.0.1 that counts messages by envelope sender."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError as exc:
        raise ConfigurationError(
            "the demo needs aiosmtpd for its local SMTP server: "
            "pip install 'mailpool[demo]'"
        ) from exc
    received: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with lock:
                received[envelope.mail_from] += 1
            return "250 Message accepted for delivery"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


def run_demo(messages: int = 12, *, out: Callable[[str], None] = print) -> int:
    """Send ``messages`` through a pool of three accounts with small limits,
    then show the counts, what happens at the limits, and the next day."""
    with local_smtp_server() as (port, received):
        out(f"Local SMTP server listening on 127.0.0.1:{port}\n")
        storage = InMemoryStorage()
        for name, sender, limit in _ACCOUNTS:
            storage.add(
                Account(
                    email=f"{name}@demo.example",
                    sender_name=sender,
                    daily_limit=limit,
                    min_wait_time=0,
                    smtp=SMTPSettings(host="127.0.0.1", port=port, use_tls=False),
                )
            )
        total = sum(limit for *_, limit in _ACCOUNTS)
        out(f"Pool: {len(_ACCOUNTS)} accounts, daily limits adding up to {total}.")
        clock = ManualClock(datetime.now(timezone.utc))
        with AccountPool(storage, selector=RandomSelector(7), clock=clock) as pool:
            out(f"Sending {messages} messages:")
            for number in range(1, messages + 1):
                try:
                    result = pool.send_mail(
                        subject=f"Demo message {number}",
                        body="Hello from mailpool.",
                        to=[f"reader{number}@example.org"],
                    )
                except NoAccountAvailable as exc:
                    out(f"  #{number:<3} not sent: {exc}")
                else:
                    out(f"  #{number:<3} sent via {result.account_email}")
            out("\nToday's usage:")
            for account, sent, remaining in pool.usage():
                out(
                    f"  {account.email:<22} sent {sent} of {account.daily_limit}, "
                    f"{remaining} left"
                )
            clock.advance(days=1)
            result = pool.send_mail(
                subject="Next day",
                body="Counts reset by themselves.",
                to=["x@example.org"],
            )
            out(
                "\nOne day later the counts have reset: sent via "
                f"{result.account_email}."
            )
        out(f"\nThe server received {sum(received.values())} messages:")
        for sender, count in sorted(received.items()):
            out(f"  {sender:<22} {count}")
    return 0
