"""mailpool benchmarks: every comparison measured side by side, in one run.

Run from the repository root (needs the ``dev`` extra)::

    python benchmarks/run.py                 # full run, a few minutes
    python benchmarks/run.py --quick         # everything shrunk, for CI
    python benchmarks/run.py --postgres-url postgresql+psycopg://user@host/db
    python benchmarks/run.py --plot docs/benchmarks-overhead.png --json out.json

PostgreSQL is measured when ``--postgres-url`` or ``MAILPOOL_TEST_POSTGRES_URL``
is set; each measurement gets a fresh schema in that database, dropped at the
end. The results are Markdown tables on stdout (see docs/benchmarks.md):

1. throughput: raw smtplib on one reused connection (the ceiling) vs
   ``pool.send`` over ``SMTPTransport``, per storage, 1 and 4 threads, against
   an aiosmtpd server running in its own process;
2. per-send overhead without SMTP (``RecordingTransport``) vs accounts in scope;
3. claims per second (``storage.claim`` + ``storage.complete``) with 1, 4 and 8
   processes vs a raw driver loop of single conditional UPDATEs;
4. latency of one claim (and its completion) vs one raw UPDATE round trip;
5. memory per account in ``InMemoryStorage`` (tracemalloc);

then the targets of the send-path issue, each met or missed. Measurements of
one table are interleaved (round after round, every contender once per round)
and the median is reported, because a shared machine is noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import multiprocessing
import os
import platform
import queue
import random
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailpool import (
    Account,
    AccountPool,
    InMemoryStorage,
    JSONStorage,
    SMTPSettings,
    SMTPTransport,
    SQLStorage,
)
from mailpool.storage import Claim, Scope, Storage
from mailpool.testing import RecordingTransport

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import SpawnContext, SpawnProcess
    from multiprocessing.queues import Queue

RECIPIENT = "rcpt@bench.example"
BIG_LIMIT = 1_000_000_000
RAW_TABLE = "mailpool_bench_counter"
SPAWN: SpawnContext = multiprocessing.get_context("spawn")


# ----------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """How much of everything to measure (``--quick`` shrinks it all)."""

    quick: bool
    # 1. throughput
    throughput_rounds: int
    throughput_messages: int  # at most, per measurement
    throughput_budget: float  # seconds per measurement, roughly
    # 2. overhead
    pool_sizes: tuple[int, ...]
    overhead_rounds: int
    overhead_budget: float  # seconds per batch
    json_max_send: float  # stop growing the JSON pool past this per-send cost
    # 3. claims per second
    process_counts: tuple[int, ...]
    claim_rounds: int
    claim_seconds: float
    # 4. latency
    latency_rounds: int
    latency_batch: int
    # 5. memory
    memory_accounts: int


FULL = Settings(
    quick=False,
    throughput_rounds=21,
    throughput_messages=400,
    throughput_budget=0.3,
    pool_sizes=(10, 1_000, 10_000, 100_000),
    overhead_rounds=15,
    overhead_budget=0.15,
    json_max_send=0.25,
    process_counts=(1, 4, 8),
    claim_rounds=11,
    claim_seconds=0.5,
    latency_rounds=15,
    latency_batch=100,
    memory_accounts=100_000,
)

QUICK = Settings(
    quick=True,
    throughput_rounds=2,
    throughput_messages=40,
    throughput_budget=0.1,
    pool_sizes=(10, 1_000),
    overhead_rounds=2,
    overhead_budget=0.05,
    json_max_send=0.25,
    process_counts=(1, 4),
    claim_rounds=1,
    claim_seconds=0.2,
    latency_rounds=2,
    latency_batch=20,
    memory_accounts=10_000,
)


# ------------------------------------------------------------------ helpers


def make_accounts(
    count: int,
    *,
    port: int = 2525,
    max_in_flight: int = 1,
    prefix: str = "sender",
    credentials: bool = True,
) -> list[Account]:
    """Accounts that may always send: no wait, a huge daily limit. Each has
    its own settings (and, with ``credentials``, a login), like real ones."""
    return [
        Account(
            email=f"{prefix}{number}@bench.example",
            sender_name=f"Sender {number}",
            owner="bench",
            tags=frozenset({"campaign"}),
            daily_limit=BIG_LIMIT,
            min_wait_time=0.0,
            max_in_flight=max_in_flight,
            smtp=SMTPSettings(
                host="127.0.0.1",
                port=port,
                use_tls=credentials,
                username=f"{prefix}{number}@bench.example" if credentials else None,
                password=f"app-password-{number:06d}" if credentials else None,
            ),
        )
        for number in range(count)
    ]


def bench_message() -> EmailMessage:
    """What the pool is given: no From, Message-ID or Date (it adds them)."""
    message = EmailMessage()
    message["To"] = RECIPIENT
    message["Subject"] = "mailpool benchmark"
    message.set_content("Hello,\n\n" + "This is a benchmark message. " * 32 + "\n")
    return message


def raw_message() -> EmailMessage:
    """The same message, complete, for raw smtplib."""
    message = bench_message()
    message["From"] = "Sender <sender@bench.example>"
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain="bench.example")
    return message


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def fmt_ratio(value: float) -> str:
    return "—" if value != value else f"{value:.2f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A Markdown table; ``align`` has one ``l`` or ``r`` per column."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("| " + " | ".join("---" if a == "l" else "---:" for a in align) + " |")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def say(text: str = "") -> None:
    print(text, flush=True)


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ----------------------------------------------------------------- backends


@dataclass(frozen=True)
class Database:
    """A SQL database a worker process can open: the storage and a raw
    connection to the same database (PostgreSQL: confined to ``schema``)."""

    kind: str  # "sqlite" or "postgresql"
    url: str
    schema: str | None = None

    def engine_options(self) -> dict[str, Any] | None:
        if self.schema is None:
            return None
        return {"connect_args": {"options": f"-c search_path={self.schema}"}}

    def open_storage(self) -> SQLStorage:
        return SQLStorage(self.url, engine_options=self.engine_options())

    def open_raw(self) -> RawCounter:
        return RawCounter(self)


class RawCounter:
    """The physical limit: one conditional UPDATE per call, autocommit, on the
    driver mailpool uses (sqlite3 / psycopg), in the same database."""

    rows = 100

    def __init__(self, database: Database) -> None:
        self._database = database
        self._rng = random.Random()
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None
        if database.kind == "sqlite":
            import sqlalchemy as sa

            path = sa.make_url(database.url).database
            assert path
            # As SQLStorage opens it: WAL, a 30 s busy timeout, autocommit.
            self._sqlite = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            self._sqlite.execute("PRAGMA journal_mode = WAL").fetchall()
            self._statement = f"UPDATE {RAW_TABLE} SET n = n + 1 WHERE id = ? AND n < ?"
        else:
            import psycopg
            import sqlalchemy as sa

            url = sa.make_url(database.url).set(drivername="postgresql")
            self._pg = psycopg.connect(
                url.render_as_string(hide_password=False),
                autocommit=True,
                options=f"-c search_path={database.schema}",
            )
            self._statement = (
                f"UPDATE {RAW_TABLE} SET n = n + 1 WHERE id = %s AND n < %s"
            )

    def create_table(self) -> None:
        ddl = f"CREATE TABLE {RAW_TABLE} (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"
        rows = [(number, 0) for number in range(self.rows)]
        if self._sqlite is not None:
            self._sqlite.execute(ddl)
            self._sqlite.execute("BEGIN")
            self._sqlite.executemany(f"INSERT INTO {RAW_TABLE} VALUES (?, ?)", rows)
            self._sqlite.execute("COMMIT")
        else:
            with self._pg.cursor() as cursor:
                cursor.execute(ddl)
                cursor.executemany(f"INSERT INTO {RAW_TABLE} VALUES (%s, %s)", rows)

    def bump(self) -> None:
        """One conditional UPDATE of a random row: one round trip."""
        params = (self._rng.randrange(self.rows), BIG_LIMIT)
        if self._sqlite is not None:
            cursor = self._sqlite.execute(self._statement, params)
            assert cursor.rowcount == 1
        else:
            with self._pg.cursor() as cursor:
                cursor.execute(self._statement, params)
                assert cursor.rowcount == 1

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            self._pg.close()


class Backends:
    """Opens fresh storages of each kind and cleans up after the run."""

    def __init__(self, folder: Path, postgres_url: str | None) -> None:
        self.folder = folder
        self.postgres_url = postgres_url
        self._schemas: list[str] = []
        self._storages: list[Storage] = []
        self._admin: Any = None
        self._count = 0

    @property
    def kinds(self) -> list[str]:
        kinds = ["memory", "json", "sqlite"]
        return [*kinds, "postgresql"] if self.postgres_url else kinds

    @property
    def sql_kinds(self) -> list[str]:
        return [kind for kind in self.kinds if kind in ("sqlite", "postgresql")]

    def _name(self) -> str:
        self._count += 1
        return f"b{self._count}"

    def database(self, kind: str) -> Database:
        """A new empty SQL database (SQLite file or PostgreSQL schema)."""
        name = self._name()
        if kind == "sqlite":
            return Database("sqlite", f"sqlite:///{self.folder / name}.db")
        assert self.postgres_url is not None
        import sqlalchemy as sa

        if self._admin is None:
            self._admin = sa.create_engine(self.postgres_url)
        schema = f"mailpool_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self._admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        self._schemas.append(schema)
        return Database("postgresql", self.postgres_url, schema)

    def open(self, kind: str) -> Storage:
        """A new empty storage of ``kind``."""
        storage: Storage
        if kind == "memory":
            storage = InMemoryStorage()
        elif kind == "json":
            storage = JSONStorage(self.folder / f"{self._name()}.json")
        else:
            storage = self.database(kind).open_storage()
        self._storages.append(storage)
        return storage

    def postgres_version(self) -> str:
        if not self.postgres_url:
            return "not measured"
        import sqlalchemy as sa

        if self._admin is None:
            self._admin = sa.create_engine(self.postgres_url)
        with self._admin.connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
        return f"PostgreSQL {version}"

    def close(self) -> None:
        for storage in self._storages:
            with contextlib.suppress(Exception):
                storage.close()
        if self._admin is not None:
            import sqlalchemy as sa

            with self._admin.begin() as conn:
                for schema in self._schemas:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            self._admin.dispose()


LABELS = {
    "raw": "raw smtplib",
    "memory": "InMemoryStorage",
    "json": "JSONStorage",
    "sqlite": "SQLite",
    "postgresql": "PostgreSQL",
}


# ------------------------------------------------------------ 1. throughput


def _smtp_sink(conn: Connection) -> None:
    """The SMTP server process: aiosmtpd answering 250 to everything and
    counting messages. Commands on ``conn``: "count", "stop"."""
    from aiosmtpd.smtp import SMTP

    class Counter:
        count = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.count += 1
            return "250 OK"

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        handler = Counter()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="sink.bench.example", ident="sink"),
            "127.0.0.1",
            0,
        )
        conn.send(server.sockets[0].getsockname()[1])
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "stop":
                break
            conn.send(handler.count)
        server.close()

    asyncio.run(serve())


class SMTPSink:
    """The aiosmtpd server in its own process (a child, via spawn)."""

    def __init__(self) -> None:
        self._conn, child = SPAWN.Pipe()
        self._process = SPAWN.Process(target=_smtp_sink, args=(child,), daemon=True)
        self._process.start()
        if not self._conn.poll(30):
            raise RuntimeError("the SMTP server process did not start")
        self.port: int = self._conn.recv()

    def count(self) -> int:
        self._conn.send("count")
        received: int = self._conn.recv()
        return received

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def in_threads(threads: int, messages: int, work: Callable[[int, int], None]) -> float:
    """Run ``work(thread, count)`` in ``threads`` threads sharing ``messages``;
    return messages per second, from the moment all threads are ready."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def run(number: int) -> None:
        share = messages // threads + (1 if number < messages % threads else 0)
        barrier.wait()
        try:
            work(number, share)
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return messages / elapsed


@dataclass
class ThroughputResult:
    threads: int
    kind: str
    rates: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # vs raw, same round


def bench_throughput(settings: Settings, backends: Backends) -> list[ThroughputResult]:
    sink = SMTPSink()
    try:
        return _bench_throughput(settings, backends, sink)
    finally:
        sink.stop()


def _bench_throughput(
    settings: Settings, backends: Backends, sink: SMTPSink
) -> list[ThroughputResult]:
    thread_counts = (1, 4)
    raw = raw_message()
    message = bench_message()
    # Raw smtplib: one connection per thread, opened once, reused throughout.
    connections = [smtplib.SMTP("127.0.0.1", sink.port) for _ in range(4)]
    for connection in connections:
        connection.ehlo()

    def raw_work(thread: int, count: int) -> None:
        connection = connections[thread]
        for _ in range(count):
            connection.send_message(
                raw, from_addr="sender@bench.example", to_addrs=[RECIPIENT]
            )

    # mailpool: 4 accounts, each up to 4 sends at once, sessions reused.
    pools: dict[str, AccountPool] = {}
    for kind in backends.kinds:
        storage = backends.open(kind)
        storage.add_many(
            make_accounts(
                4, port=sink.port, max_in_flight=4, prefix=kind, credentials=False
            )
        )
        pools[kind] = AccountPool(storage, transport=SMTPTransport(timeout=30.0))

    def pool_work(kind: str) -> Callable[[int, int], None]:
        pool = pools[kind]

        def work(thread: int, count: int) -> None:
            for _ in range(count):
                pool.send(message)

        return work

    contenders: dict[str, Callable[[int, int], None]] = {"raw": raw_work}
    contenders.update({kind: pool_work(kind) for kind in pools})
    results = {
        (threads, name): ThroughputResult(threads, name)
        for threads in thread_counts
        for name in contenders
    }
    sent = 0
    # Messages per measurement: what the warm-up rate sends in the time
    # budget, within bounds (a slow storage is not given all day).
    counts = {(threads, name): 20 for threads in thread_counts for name in contenders}
    # One warm-up round (sessions open, caches filled), then the measured ones.
    for round_number in range(settings.throughput_rounds + 1):
        measured = round_number > 0
        progress(f"throughput round {round_number}/{settings.throughput_rounds}")
        for threads in thread_counts:
            order = list(contenders)
            random.shuffle(order)  # no contender always runs first
            rates: dict[str, float] = {}
            for name in order:
                count = counts[(threads, name)]
                rates[name] = in_threads(threads, count, contenders[name])
                sent += count
                if not measured:
                    counts[(threads, name)] = max(
                        settings.throughput_messages // 8,
                        min(
                            settings.throughput_messages,
                            int(rates[name] * settings.throughput_budget),
                        ),
                    )
            if measured:
                for name, rate in rates.items():
                    result = results[(threads, name)]
                    result.rates.append(rate)
                    result.ratios.append(rate / rates["raw"])
    for pool in pools.values():
        pool.close()
    for connection in connections:
        connection.quit()
    received = sink.count()
    if received != sent:
        raise RuntimeError(f"the server received {received} messages, not {sent}")
    return list(results.values())


def report_throughput(results: list[ThroughputResult]) -> None:
    say("## 1. Throughput: raw smtplib vs `pool.send` over SMTP\n")
    rows = [
        [
            str(result.threads),
            LABELS[result.kind],
            fmt_rate(median(result.rates)),
            fmt_ratio(median(result.ratios)),
        ]
        for result in sorted(results, key=lambda r: r.threads)
    ]
    say(table(["threads", "sender", "messages/s", "vs raw"], rows, "rlrr"))
    say(
        "\nmessages/s: median of the rounds; vs raw: median of the per-round "
        "ratios to raw smtplib measured in the same round. Raw smtplib sends a "
        "complete message (From, Date, Message-ID set once) on one connection "
        "per thread; mailpool is given the message without them and picks "
        "among 4 accounts (each up to 4 sends in flight) over `SMTPTransport` "
        "(sessions reused). The server (aiosmtpd, answering 250 and counting) "
        "runs in its own process.\n"
    )


# -------------------------------------------------------------- 2. overhead


@dataclass
class OverheadCell:
    kind: str
    size: int
    pool: AccountPool | None
    transport: RecordingTransport
    load_seconds: float
    samples: list[float] = field(default_factory=list)  # seconds per send
    rounds: dict[int, float] = field(default_factory=dict)  # the same, by round
    sends: int = 0
    note: str = ""

    def ratio_to(self, base: OverheadCell) -> float:
        """Median of the per-round ratios to ``base`` (measured in the same
        rounds); the ratio of the medians when they share no round."""
        common = sorted(self.rounds.keys() & base.rounds.keys())
        if common:
            return median([self.rounds[r] / base.rounds[r] for r in common])
        return median(self.samples) / median(base.samples)


def _send_batch(
    cell: OverheadCell, message: EmailMessage, budget: float, round_number: int = -1
) -> None:
    assert cell.pool is not None
    sends = 0
    started = time.perf_counter()
    elapsed = 0.0
    while sends < 3 or elapsed < budget:
        cell.pool.send(message)
        sends += 1
        elapsed = time.perf_counter() - started
    cell.samples.append(elapsed / sends)
    if round_number >= 0:
        cell.rounds[round_number] = elapsed / sends
    cell.sends += sends
    cell.transport.sent.clear()


def bench_overhead(settings: Settings, backends: Backends) -> list[OverheadCell]:
    message = bench_message()
    largest = max(settings.pool_sizes)
    progress(f"making {largest:,} accounts")
    accounts = make_accounts(largest)
    cells: list[OverheadCell] = []
    for kind in backends.kinds:
        for size in settings.pool_sizes:
            if kind == "json" and any(
                c.kind == "json" and c.pool is None for c in cells
            ):
                cells.append(_skipped(kind, size, "past the limit"))
                continue
            progress(f"loading {size:,} accounts into {kind}")
            storage = backends.open(kind)
            started = time.perf_counter()
            storage.add_many(accounts[:size])
            load = time.perf_counter() - started
            transport = RecordingTransport()
            pool = AccountPool(storage, transport=transport)
            cell = OverheadCell(kind, size, pool, transport, load)
            _send_batch(cell, message, 0.0)  # warm-up, not counted
            cell.samples.clear()
            cell.sends = 0
            if kind == "json":
                # JSON rewrites the whole file per claim: find where that
                # stops being practical before growing the pool further.
                _send_batch(cell, message, 0.0)
                if cell.samples[-1] > settings.json_max_send:
                    cell.note = "limit"
                    cell.pool = None
                    _end_cell(cell)
            cells.append(cell)
    for round_number in range(settings.overhead_rounds):
        progress(f"overhead round {round_number + 1}/{settings.overhead_rounds}")
        order = [cell for cell in cells if cell.pool is not None]
        random.shuffle(order)
        for cell in order:
            _send_batch(cell, message, settings.overhead_budget, round_number)
    for cell in cells:
        _end_cell(cell)
    return cells


def _skipped(kind: str, size: int, note: str) -> OverheadCell:
    return OverheadCell(kind, size, None, RecordingTransport(), 0.0, note=note)


def _end_cell(cell: OverheadCell) -> None:
    if cell.pool is not None:
        cell.pool.close()
        cell.pool.storage.close()
        cell.pool = None


def report_overhead(cells: list[OverheadCell], settings: Settings) -> None:
    say("## 2. Per-send overhead without SMTP (`RecordingTransport`)\n")
    sizes = list(settings.pool_sizes)
    kinds = list(dict.fromkeys(cell.kind for cell in cells))
    by_key = {(cell.kind, cell.size): cell for cell in cells}
    rows = []
    for kind in kinds:
        base = by_key[(kind, sizes[0])]
        row = [LABELS[kind]]
        for size in sizes:
            cell = by_key[(kind, size)]
            if not cell.samples:
                row.append("— (not practical)")
                continue
            value = median(cell.samples)
            text = fmt_us(value)
            if size != sizes[0]:
                text += f" ({fmt_ratio(cell.ratio_to(base))})"
            if cell.note == "limit":
                text += " †"
            row.append(text)
        rows.append(row)
    header = ["µs per send (vs 10 accounts)", *(f"{size:,} accounts" for size in sizes)]
    say(table(header, rows, "l" + "r" * len(sizes)))
    say(
        "\nMedian of the rounds of µs per `pool.send` (claim, prepare, record, "
        "complete), one thread; in parentheses the median of the per-round "
        "ratios to the smallest pool."
    )
    if any(cell.note == "limit" for cell in cells):
        say(
            f"† JSONStorage rewrites its whole file per claim and per completion: "
            f"past {settings.json_max_send * 1000:.0f} ms a send it is not "
            "practical, so larger pools were not measured (a few sends only here)."
        )
    say()
    rows = [
        [
            LABELS[kind],
            *(
                f"{by_key[(kind, size)].load_seconds:.2f}"
                if by_key[(kind, size)].load_seconds
                else "—"
                for size in sizes
            ),
        ]
        for kind in kinds
    ]
    header = ["`add_many` seconds", *(f"{size:,}" for size in sizes)]
    say(table(header, rows, "l" + "r" * len(sizes)))
    say()


def plot_overhead(cells: list[OverheadCell], path: Path) -> str:
    """Draw µs per send vs accounts in scope (log-log); return a note."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return f"matplotlib is not installed: no plot written to {path}"
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=120)
    for kind in dict.fromkeys(cell.kind for cell in cells):
        points = [
            (cell.size, median(cell.samples) * 1e6)
            for cell in cells
            if cell.kind == kind and cell.samples
        ]
        axes.plot(*zip(*points, strict=True), marker="o", label=LABELS[kind])
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("accounts in scope")
    axes.set_ylabel("µs per send (no SMTP)")
    axes.set_title("mailpool: per-send overhead vs pool size")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)
    return f"plot written to {path}"


# ------------------------------------------------- 3. claims per second


def _claim_worker(database: Database, inbox: Queue[Any], outbox: Queue[Any]) -> None:
    """A worker process: on each command, run claim+complete (or the raw
    UPDATE) from ``start`` for ``seconds``; report operations per second."""
    storage = database.open_storage()
    raw = database.open_raw()
    scope = Scope()
    # First use: connect, check the tables, compile the statements.
    lease = storage.claim(Claim(scope, utcnow()))
    assert lease is not None
    storage.complete(lease, utcnow())
    raw.bump()
    outbox.put(("ready", 0.0, 0))
    while True:
        command = inbox.get()
        if command is None:
            break
        what, start, seconds = command
        time.sleep(max(0.0, start - time.time()))
        end = start + seconds
        done = missed = 0
        began = time.perf_counter()
        if what == "raw":
            while time.time() < end:
                raw.bump()
                done += 1
        else:
            while time.time() < end:
                lease = storage.claim(Claim(scope, utcnow()))
                if lease is None:
                    missed += 1
                    continue
                storage.complete(lease, utcnow())
                done += 1
        outbox.put((what, done / (time.perf_counter() - began), missed))
    storage.close()
    raw.close()


def _collect(
    outbox: Queue[Any], count: int, workers: Sequence[SpawnProcess]
) -> list[Any]:
    """``count`` replies from the workers; fails at once if one died."""
    replies: list[Any] = []
    deadline = time.monotonic() + 300
    while len(replies) < count:
        try:
            replies.append(outbox.get(timeout=1.0))
        except queue.Empty:
            dead = [w.exitcode for w in workers if not w.is_alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(
                    f"a claim worker process died (exit codes {dead}); its "
                    "traceback is on stderr"
                ) from None
    return replies


@dataclass
class ClaimResult:
    kind: str
    processes: int
    pool: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    missed: int = 0


def bench_claims(settings: Settings, backends: Backends) -> list[ClaimResult]:
    results: list[ClaimResult] = []
    accounts = 100
    most = max(settings.process_counts)
    for kind in backends.sql_kinds:
        database = backends.database(kind)
        storage = database.open_storage()
        storage.add_many(make_accounts(accounts, prefix="c"))
        storage.close()
        raw = database.open_raw()
        raw.create_table()
        raw.close()
        progress(f"starting {most} worker processes on {kind}")
        inboxes: list[Queue[Any]] = [SPAWN.Queue() for _ in range(most)]
        outbox: Queue[Any] = SPAWN.Queue()
        workers: list[SpawnProcess] = [
            SPAWN.Process(
                target=_claim_worker,
                args=(database, inbox, outbox),
                daemon=True,
            )
            for inbox in inboxes
        ]
        for worker in workers:
            worker.start()
        try:
            _collect(outbox, len(workers), workers)
            by_count = {n: ClaimResult(kind, n) for n in settings.process_counts}
            for round_number in range(settings.claim_rounds):
                progress(
                    f"claims on {kind}, round {round_number + 1}/"
                    f"{settings.claim_rounds}"
                )
                for processes in settings.process_counts:
                    order = ["raw", "pool"]
                    random.shuffle(order)
                    rates: dict[str, float] = {}
                    for what in order:
                        start = time.time() + 0.1
                        for inbox in inboxes[:processes]:
                            inbox.put((what, start, settings.claim_seconds))
                        replies = _collect(outbox, processes, workers)
                        rates[what] = sum(reply[1] for reply in replies)
                        by_count[processes].missed += sum(r[2] for r in replies)
                    result = by_count[processes]
                    result.pool.append(rates["pool"])
                    result.raw.append(rates["raw"])
                    result.ratios.append(rates["pool"] / rates["raw"])
            results.extend(by_count.values())
        finally:
            for inbox in inboxes:
                inbox.put(None)
            for worker in workers:
                worker.join(30)
                if worker.is_alive():
                    worker.kill()
    return results


def report_claims(results: list[ClaimResult]) -> None:
    say("## 3. Claims per second across processes\n")
    rows = [
        [
            LABELS[result.kind],
            str(result.processes),
            fmt_rate(median(result.pool)),
            fmt_rate(median(result.raw)),
            fmt_ratio(median(result.ratios)),
        ]
        for result in results
    ]
    say(
        table(
            [
                "database",
                "processes",
                "claim + complete /s",
                "raw UPDATE /s",
                "vs raw",
            ],
            rows,
            "lrrrr",
        )
    )
    say(
        "\nEach process loops `storage.claim` + `storage.complete` over 100 "
        "accounts (the raw loop: one autocommit `UPDATE ... SET n = n + 1 WHERE "
        "id = ? AND n < ?` on a random row of a 100-row table in the same "
        "database, same driver). Medians of the rounds; vs raw: median of the "
        "per-round ratios."
    )
    missed = sum(result.missed for result in results)
    if missed:
        say(f"{missed} claims found no account (not counted).")
    say()


# ---------------------------------------------------------------- 4. latency


@dataclass
class LatencyResult:
    kind: str
    raw: list[float] = field(default_factory=list)
    claim: list[float] = field(default_factory=list)
    complete: list[float] = field(default_factory=list)

    def pairs(self) -> list[float]:
        return [c + d for c, d in zip(self.claim, self.complete, strict=True)]

    def pair(self) -> float:
        return median(self.pairs())

    def ratio(self, values: list[float]) -> float:
        """Median of the per-round ratios of ``values`` to the raw UPDATE."""
        return median([v / r for v, r in zip(values, self.raw, strict=True)])


def bench_latency(settings: Settings, backends: Backends) -> list[LatencyResult]:
    results = []
    for kind in backends.sql_kinds:
        progress(f"latency on {kind}")
        database = backends.database(kind)
        storage = database.open_storage()
        storage.add_many(make_accounts(100, prefix="l"))
        raw = database.open_raw()
        raw.create_table()
        scope = Scope()
        result = LatencyResult(kind)
        batch = settings.latency_batch
        raw_time = claim_time = complete_time = 0.0
        for round_number in range(settings.latency_rounds + 1):
            order = ["raw", "pool"]
            random.shuffle(order)
            for what in order:
                if what == "raw":
                    started = time.perf_counter()
                    for _ in range(batch):
                        raw.bump()
                    raw_time = (time.perf_counter() - started) / batch
                else:
                    claim_time = complete_time = 0.0
                    for _ in range(batch):
                        t0 = time.perf_counter()
                        lease = storage.claim(Claim(scope, utcnow()))
                        t1 = time.perf_counter()
                        assert lease is not None
                        storage.complete(lease, utcnow())
                        t2 = time.perf_counter()
                        claim_time += t1 - t0
                        complete_time += t2 - t1
            if round_number:  # round 0 warms up
                result.raw.append(raw_time)
                result.claim.append(claim_time / batch)
                result.complete.append(complete_time / batch)
        storage.close()
        raw.close()
        results.append(result)
    return results


def report_latency(results: list[LatencyResult]) -> None:
    say("## 4. Latency of one claim vs one raw round trip (one process)\n")
    rows = []
    for result in results:
        raw = median(result.raw)
        rows.append(
            [
                LABELS[result.kind],
                fmt_us(raw),
                f"{fmt_us(median(result.claim))} "
                f"({fmt_ratio(result.ratio(result.claim))})",
                fmt_us(median(result.complete)),
                f"{fmt_us(result.pair())} ({fmt_ratio(result.ratio(result.pairs()))})",
            ]
        )
    say(
        table(
            [
                "database",
                "raw UPDATE µs",
                "claim µs",
                "complete µs",
                "claim + complete µs",
            ],
            rows,
            "lrrrr",
        )
    )
    say(
        "\nMedian of the rounds' mean µs per operation; in parentheses the "
        "median of the per-round ratios to the raw UPDATE.\n"
    )


# ----------------------------------------------------------------- 5. memory


@dataclass
class MemoryResult:
    variant: str
    accounts: int
    models_bytes: int  # the Account objects themselves
    storage_bytes: int  # what InMemoryStorage adds (dicts, indexes)

    @property
    def per_account(self) -> float:
        return (self.models_bytes + self.storage_bytes) / self.accounts


def minimal_accounts(count: int) -> list[Account]:
    """Accounts with only what is required: an email and an SMTP host."""
    return [
        Account(email=f"minimal{n}@bench.example", smtp=SMTPSettings(host="127.0.0.1"))
        for n in range(count)
    ]


MEMORY_VARIANTS: dict[str, Callable[[int], list[Account]]] = {
    "minimal (email, SMTP host)": minimal_accounts,
    "realistic (+ name, owner, tag, login, password)": make_accounts,
}


def bench_memory(settings: Settings) -> list[MemoryResult]:
    count = settings.memory_accounts
    results = []
    for variant, make in MEMORY_VARIANTS.items():
        progress(f"memory of {count:,} accounts, {variant}")
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            accounts = make(count)
            made = tracemalloc.get_traced_memory()[0]
            storage = InMemoryStorage()
            storage.add_many(accounts)
            del accounts
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(storage.accounts()) == count
        del storage
        results.append(MemoryResult(variant, count, made - before, after - made))
    return results


def report_memory(results: list[MemoryResult]) -> None:
    say("## 5. Memory per account in `InMemoryStorage`\n")
    rows = [
        [
            result.variant,
            f"{result.accounts:,}",
            f"{(result.models_bytes + result.storage_bytes) / 1e6:,.1f}",
            f"{result.models_bytes / result.accounts:,.0f}",
            f"{result.storage_bytes / result.accounts:,.0f}",
            f"**{result.per_account:,.0f}**",
        ]
        for result in results
    ]
    header = [
        "accounts",
        "count",
        "MB",
        "models B/account",
        "storage B/account",
        "total B/account",
    ]
    say(table(header, rows, "lrrrrr"))
    say(
        "\ntracemalloc: models = the `Account` objects as built (with their "
        "`SMTPSettings`); storage = what `add_many` adds (its dicts and indexes).\n"
    )


# ----------------------------------------------------------------- targets


@dataclass
class Target:
    text: str
    measured: str
    met: bool | None  # None: not measured


def targets(
    settings: Settings,
    throughput: list[ThroughputResult] | None,
    overhead: list[OverheadCell] | None,
    claims: list[ClaimResult] | None,
    latency: list[LatencyResult] | None,
    memory: list[MemoryResult] | None,
) -> list[Target]:
    found: list[Target] = []
    if throughput is not None:
        for kind, goal in (("memory", 0.9), ("sqlite", 0.75), ("postgresql", 0.75)):
            for result in throughput:
                if result.kind == kind:
                    ratio = median(result.ratios)
                    found.append(
                        Target(
                            f"`pool.send` on {LABELS[kind]}, {result.threads} "
                            f"thread(s) >= {goal}x raw smtplib",
                            fmt_ratio(ratio),
                            ratio >= goal,
                        )
                    )
    if overhead is not None:
        sizes = settings.pool_sizes
        for kind in ("memory", "sqlite", "postgresql"):
            cells = {c.size: c for c in overhead if c.kind == kind}
            if not cells:
                continue
            ratio = cells[sizes[-1]].ratio_to(cells[sizes[0]])
            found.append(
                Target(
                    f"{LABELS[kind]} overhead at {sizes[-1]:,} accounts <= 2x "
                    f"the overhead at {sizes[0]}",
                    f"{fmt_ratio(ratio)} ({fmt_us(median(cells[sizes[-1]].samples))}"
                    f" vs {fmt_us(median(cells[sizes[0]].samples))} µs)",
                    ratio <= 2.0,
                )
            )
    for timing in latency or []:
        if timing.kind == "postgresql":
            ratio = timing.ratio(timing.pairs())
            found.append(
                Target(
                    "PostgreSQL claim + completion <= 3x one raw UPDATE round trip",
                    f"{ratio:.2f}x ({fmt_us(timing.pair())} vs "
                    f"{fmt_us(median(timing.raw))} µs)",
                    ratio <= 3.0,
                )
            )
    for claim in claims or []:
        if claim.kind == "postgresql" and claim.processes == max(
            settings.process_counts
        ):
            ratio = median(claim.ratios)
            found.append(
                Target(
                    f"PostgreSQL claims/s with {claim.processes} processes >= 0.5x "
                    "the raw UPDATE loop",
                    f"{ratio:.2f}x ({fmt_rate(median(claim.pool))} vs "
                    f"{fmt_rate(median(claim.raw))} /s)",
                    ratio >= 0.5,
                )
            )
    for size in memory or []:
        found.append(
            Target(
                f"InMemoryStorage <= 2 KB (2,000 bytes) per account, {size.variant}",
                f"{size.per_account:,.0f} bytes ({size.accounts:,} accounts)",
                size.per_account <= 2000,
            )
        )
    return found


def report_targets(found: list[Target], settings: Settings) -> None:
    say("## Targets\n")
    rows = [
        [target.text, target.measured, "met" if target.met else "**missed**"]
        for target in found
    ]
    say(table(["target", "measured", ""], rows, "lrl"))
    if settings.quick:
        say("\n(--quick: small pools and few rounds; the full run decides.)")
    say()


# ---------------------------------------------------------------- profiling


def _package(path: str | None) -> str:
    """Which package a profiled frame's file belongs to."""
    if not path:
        return "other"
    if path.startswith("<"):
        return "built-in (C: driver calls, I/O)"
    parts = Path(path).parts
    for name in ("mailpool", "sqlalchemy", "psycopg", "pydantic", "filelock"):
        if name in parts:
            return name
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    return "Python stdlib" if "python3" in path else "other"


def _where(frame: Any) -> str:
    path = Path(frame.file_path or "?")
    parts = path.parts
    shown = (
        "/".join(parts[parts.index("mailpool") :]) if "mailpool" in parts else path.name
    )
    owner = f"{frame.class_name}." if frame.class_name else ""
    return f"{shown}:{owner}{frame.function}"


def profile_send(
    kind: str, backends: Backends, accounts: int, sends: int, *, smtp: bool
) -> None:
    """Profile ``pool.send`` with pyinstrument (over SMTP to the benchmark's
    server with ``smtp``, else with RecordingTransport) and print where the
    time goes: inclusive time of mailpool's functions, self time by package."""
    try:
        pyinstrument = importlib.import_module("pyinstrument")
    except ImportError:
        say("pyinstrument is not installed: pip install pyinstrument")
        return
    with contextlib.ExitStack() as stack:
        storage = backends.open(kind)
        transport: SMTPTransport | RecordingTransport
        if smtp:
            sink = SMTPSink()
            stack.callback(sink.stop)
            storage.add_many(make_accounts(accounts, port=sink.port, credentials=False))
            transport = SMTPTransport()
        else:
            storage.add_many(make_accounts(accounts))
            transport = RecordingTransport()
        pool = stack.enter_context(AccountPool(storage, transport=transport))
        _profile(pyinstrument, pool, kind, accounts, sends, smtp=smtp)


def _profile(
    pyinstrument: Any,
    pool: AccountPool,
    kind: str,
    accounts: int,
    sends: int,
    *,
    smtp: bool,
) -> None:
    message = bench_message()
    for _ in range(20):
        pool.send(message)
    started = time.perf_counter()
    for _ in range(sends):
        pool.send(message)
    plain = (time.perf_counter() - started) / sends
    profiler = pyinstrument.Profiler(interval=0.0002)
    profiler.start()
    for _ in range(sends):
        pool.send(message)
    profiler.stop()
    root = profiler.last_session.root_frame()
    total = root.time
    inclusive: dict[str, float] = {}
    by_package: dict[str, float] = {}

    def walk(frame: Any, above: frozenset[str], parent: str) -> None:
        # Synthetic frames ("[self]", hidden groups) have no file: they belong
        # to their parent's package.
        package = _package(frame.file_path) if frame.file_path else parent
        own = frame.time - sum(child.time for child in frame.children)
        by_package[package] = by_package.get(package, 0.0) + own
        key = _where(frame)
        if frame.file_path and package == "mailpool" and key not in above:
            inclusive[key] = inclusive.get(key, 0.0) + frame.time
        for child in frame.children:
            walk(child, above | {key}, package)

    walk(root, frozenset(), "other")
    over = "SMTPTransport to the local server" if smtp else "RecordingTransport"
    say(f"## Profile: `pool.send` on {LABELS[kind]}, {accounts:,} accounts, {over}\n")
    say(
        f"{sends} sends, {fmt_us(plain)} µs per send without the profiler "
        f"({total / sends * 1e6:,.0f} µs with it).\n"
    )
    top = sorted(inclusive.items(), key=lambda item: -item[1])[:15]
    rows = [[f"`{key}`", f"{value / total:.0%}"] for key, value in top]
    say(table(["mailpool function (inclusive)", "% of time"], rows, "lr"))
    say()
    rows = [
        [package, f"{value / total:.0%}"]
        for package, value in sorted(by_package.items(), key=lambda item: -item[1])
        if value / total >= 0.005
    ]
    say(table(["self time in", "% of time"], rows, "lr"))
    say("\n```text")
    say(profiler.output_text(unicode=False, color=False, show_all=False).strip())
    say("```\n")


# -------------------------------------------------------------------- main


SECTIONS = ("throughput", "overhead", "claims", "latency", "memory")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def load() -> str:
    """The 1-minute load average: how busy the machine was (other work
    on a shared machine makes numbers noisy)."""
    with contextlib.suppress(OSError, AttributeError):
        return f"{os.getloadavg()[0]:.1f}"
    return "unknown"


def source() -> str:
    """The mailpool measured: git commit, and a hash of its source files
    (which tells apart runs of different uncommitted working trees)."""
    import hashlib

    package = Path(importlib.import_module("mailpool").__file__ or ".").parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.read_bytes())
    commit = "unknown commit"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=package,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        commit = f"git {done.stdout.strip()}"
    return f"{commit}, sources sha256 {digest.hexdigest()[:12]}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="mailpool benchmarks: Markdown tables on stdout."
    )
    parser.add_argument(
        "--quick", action="store_true", help="shrink everything (CI, < 1 minute)"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("MAILPOOL_TEST_POSTGRES_URL") or None,
        help="measure PostgreSQL too (default: $MAILPOOL_TEST_POSTGRES_URL)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--plot", type=Path, help="write the overhead plot (PNG, needs matplotlib)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--profile",
        choices=["memory", "json", "sqlite", "postgresql"],
        help="instead of the benchmarks, profile pool.send on this storage "
        "(needs pyinstrument)",
    )
    parser.add_argument("--profile-accounts", type=int, default=1000)
    parser.add_argument("--profile-sends", type=int, default=300)
    parser.add_argument(
        "--profile-smtp",
        action="store_true",
        help="profile sends over SMTPTransport to a local server (in its own "
        "process) instead of RecordingTransport",
    )
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    sections = set(args.sections.split(","))
    began = time.perf_counter()
    load_at_start = load()
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        backends = Backends(folder, args.postgres_url)
        stack.callback(backends.close)
        if args.profile:
            if args.profile == "postgresql" and not args.postgres_url:
                raise SystemExit("--profile postgresql needs --postgres-url")
            profile_send(
                args.profile,
                backends,
                args.profile_accounts,
                args.profile_sends,
                smtp=args.profile_smtp,
            )
            return 0
        say("# mailpool benchmarks\n")
        say(f"- machine: {machine()}")
        say(f"- database: {backends.postgres_version()}")
        say(f"- mailpool: {source()}")
        say(f"- run: {'--quick' if settings.quick else 'full'}, {utcnow():%Y-%m-%d}")
        say()
        throughput = overhead = claims = latency = None
        memory = None
        if "throughput" in sections:
            throughput = bench_throughput(settings, backends)
            report_throughput(throughput)
        if "overhead" in sections:
            overhead = bench_overhead(settings, backends)
            report_overhead(overhead, settings)
            if args.plot:
                say(plot_overhead(overhead, args.plot) + "\n")
        if "claims" in sections and backends.sql_kinds:
            claims = bench_claims(settings, backends)
            report_claims(claims)
        if "latency" in sections:
            latency = bench_latency(settings, backends)
            report_latency(latency)
        if "memory" in sections:
            memory = bench_memory(settings)
            report_memory(memory)
        found = targets(settings, throughput, overhead, claims, latency, memory)
        report_targets(found, settings)
        say(
            f"Total time: {time.perf_counter() - began:.0f} s; load average "
            f"{load_at_start} at the start, {load()} at the end."
        )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "machine": machine(),
                        "quick": settings.quick,
                        "throughput": [vars(r) for r in throughput or []],
                        "overhead": [
                            {
                                "kind": c.kind,
                                "size": c.size,
                                "samples": c.samples,
                                "sends": c.sends,
                                "load_seconds": c.load_seconds,
                                "note": c.note,
                            }
                            for c in overhead or []
                        ],
                        "claims": [vars(r) for r in claims or []],
                        "latency": [vars(r) for r in latency or []],
                        "memory": [vars(r) for r in memory or []],
                        "targets": [vars(t) for t in found],
                    },
                    indent=2,
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
