"""Throughput of mailpool's moving parts, printed as Markdown tables.

    python benchmarks/throughput.py [--messages 300] [--reservations 2000]

1. Sends per second through a pool to a local aiosmtpd server, with SMTP
   sessions reused between sends and with a new session per message.
2. reserve + release pairs per second for each storage backend (PostgreSQL too
   when MAILPOOL_TEST_POSTGRES_URL is set).

Results depend on the machine; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import ssl
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import trustme

from mailpool import Account, AccountPool, InMemoryStorage, SMTPSettings, SMTPTransport
from mailpool.storage import Scope, Storage, open_storage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from smtpserver import USERS, SMTPTestServer


def _accounts(port: int, count: int, *, secure: bool = False) -> list[Account]:
    logins = sorted(USERS.items())
    return [
        Account(
            email=f"bench{n}@example.com",
            daily_limit=1_000_000,
            min_wait_time=0,
            smtp=SMTPSettings(
                host="127.0.0.1",
                port=port,
                use_tls=secure,
                username=logins[n % len(logins)][0] if secure else None,
                password=logins[n % len(logins)][1] if secure else None,
            ),
        )
        for n in range(count)
    ]


def send_rate(messages: int, *, reuse: bool, secure: bool) -> float:
    """Messages per second through a 3-account pool to a local server."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with SMTPTestServer(
        mode="starttls" if secure else "plain",
        users=USERS,
        require_auth=secure,
        tls_context=server_context,
    ) as server:
        storage = InMemoryStorage()
        for account in _accounts(server.port, 3, secure=secure):
            storage.add(account)
        transport = SMTPTransport(reuse_connections=reuse, ssl_context=client_context)
        with AccountPool(storage, transport=transport) as pool:
            started = time.perf_counter()
            for number in range(messages):
                pool.send_mail(subject=f"#{number}", body="x", to=["r@example.org"])
            elapsed = time.perf_counter() - started
        assert len(server.messages) == messages
    return messages / elapsed


def reserve_rate(storage: Storage, operations: int) -> float:
    """reserve + release pairs per second on one account."""
    (account,) = _accounts(25, 1)
    storage.add(account)
    now = datetime.now(timezone.utc)
    scope = Scope()
    started = time.perf_counter()
    for _ in range(operations):
        (candidate,) = storage.eligible(scope, now)
        reservation = storage.reserve(candidate.id, now)
        assert reservation is not None
        storage.release(reservation)
    elapsed = time.perf_counter() - started
    storage.close()
    return operations / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--reservations", type=int, default=2000)
    args = parser.parse_args()
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores\n")

    print("| server | SMTP sessions | messages | messages/s |")
    print("| --- | --- | ---: | ---: |")
    for secure in (False, True):
        for reuse in (True, False):
            rate = send_rate(args.messages, reuse=reuse, secure=secure)
            server = "STARTTLS + AUTH" if secure else "plain, no AUTH"
            label = "reused per account" if reuse else "new per message"
            print(f"| {server} | {label} | {args.messages} | {rate:,.0f} |")

    with tempfile.TemporaryDirectory() as folder:
        urls = {
            "memory": "memory://",
            "JSON file": f"json://{folder}/accounts.json",
            "SQLite": f"sqlite:///{folder}/accounts.db",
        }
        if os.environ.get("MAILPOOL_TEST_POSTGRES_URL"):
            urls["PostgreSQL"] = os.environ["MAILPOOL_TEST_POSTGRES_URL"]
        print("\n| storage | eligible + reserve + release per second |\n| --- | ---: |")
        for name, url in urls.items():
            rate = reserve_rate(open_storage(url), args.reservations)
            print(f"| {name} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
