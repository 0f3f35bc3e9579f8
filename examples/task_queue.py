"""Send mail from background jobs: Celery, RQ, Dramatiq, arq or your own queue.

:func:`send_job` sends one job's message and tells the queue what to do next:

* ``done``: sent. A ``DeliveryUnknown`` is "done" too: the server may have
  the message, it was counted, and sending it again could deliver it twice.
* ``retry`` after ``delay`` seconds: waiting helps. Every account is inside
  its minimum wait, busy or at its daily limit (``NoAccountAvailable`` says
  for how long), or the mail servers failed for now (a ``SendError`` after
  the pool's own retries and failover).
* ``give_up``: waiting cannot help. No account in scope or none active (an
  operator must act), invalid job data (``ConfigurationError``), or recipients
  refused for good (``MessageRejected``).

Any number of workers, on any number of machines, can share one storage
(PostgreSQL across machines): each send claims its unit atomically, so the
daily limits hold across all of them. Wire :func:`send_job` into your queue's
task and turn ``retry`` into its delayed retry; docs/integrations.md shows
Celery. :func:`run_worker` is a plain in-process worker that does the same
with a heap of due times, and ``main`` runs it::

    MAILPOOL_STORAGE=sqlite:///mailpool.db python task_queue.py bob@example.org
"""

from __future__ import annotations

import heapq
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypedDict

from mailpool import (
    AccountPool,
    ConfigurationError,
    DeliveryUnknown,
    MessageRejected,
    NoAccountAvailable,
    SendError,
    open_storage,
)

logger = logging.getLogger(__name__)


class Job(TypedDict):
    """What a queue carries: plain JSON, no mailpool object."""

    to: str
    subject: str
    body: str


@dataclass(frozen=True)
class Outcome:
    action: Literal["done", "retry", "give_up"]
    detail: str
    delay: float = 0.0
    """For ``retry``: seconds to wait before the next attempt."""
    message_id: str | None = None


def send_job(pool: AccountPool, job: Job, *, attempt: int = 1) -> Outcome:
    """Send ``job`` once; ``attempt`` (from 1) sets the backoff after failures."""
    try:
        result = pool.send_mail(subject=job["subject"], body=job["body"], to=job["to"])
    except NoAccountAvailable as exc:
        if exc.retry_after is None:  # no account in scope, or none active
            return Outcome("give_up", str(exc))
        return Outcome("retry", str(exc), delay=max(exc.retry_after, 0.1))
    except (ConfigurationError, MessageRejected) as exc:
        return Outcome("give_up", str(exc))
    except DeliveryUnknown as exc:
        return Outcome("done", f"may have been delivered, not resent: {exc}")
    except SendError as exc:  # every account tried failed, for now
        return Outcome("retry", str(exc), delay=min(30.0 * 2 ** (attempt - 1), 3600.0))
    return Outcome(
        "done", f"sent by {result.account_email}", message_id=result.message_id
    )


def run_worker(
    pool: AccountPool,
    jobs: Iterable[Job],
    *,
    attempts: int = 5,
    max_delay: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Outcome]:
    """Run ``jobs`` to completion in this thread, retrying as :func:`send_job`
    says, and return each job's last outcome, in order.

    A job still to be retried after ``attempts`` tries, or later than
    ``max_delay`` seconds from now (e.g. at midnight, when the daily counts
    reset), ends with its ``retry`` outcome: hand it to a scheduler.
    """
    due = [(clock(), index, 1, job) for index, job in enumerate(jobs)]
    heapq.heapify(due)
    outcomes: dict[int, Outcome] = {}
    while due:
        when, index, attempt, job = heapq.heappop(due)
        if when > clock():
            sleep(when - clock())
        outcome = send_job(pool, job, attempt=attempt)
        logger.info("job %d, attempt %d: %s", index, attempt, outcome)
        retry = outcome.action == "retry" and outcome.delay <= max_delay
        if retry and attempt < attempts:
            heapq.heappush(due, (clock() + outcome.delay, index, attempt + 1, job))
            continue
        outcomes[index] = outcome
    return [outcomes[index] for index in sorted(outcomes)]


def main(argv: list[str]) -> int:
    """Send a short message to each address in ``argv``; 1 if any gave up."""
    storage = open_storage(os.environ["MAILPOOL_STORAGE"])
    try:
        with AccountPool(storage) as pool:  # closes its SMTP sessions at the end
            jobs = [
                Job(to=to, subject="Hello", body="Hello from a worker.") for to in argv
            ]
            outcomes = run_worker(pool, jobs)
    finally:
        storage.close()
    for job, outcome in zip(jobs, outcomes, strict=True):
        print(f"{job['to']}: {outcome.action}: {outcome.detail}")
    return 1 if any(outcome.action != "done" for outcome in outcomes) else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
