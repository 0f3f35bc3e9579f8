"""The integration examples in examples/ work as docs/integrations.md says.

Each runs in-process against a JSON storage in a temporary folder and a real
local SMTP relay: fastapi_app.py and flask_app.py through their frameworks'
test clients, task_queue.py through its functions and its ``main``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mailpool import Account, AccountStatus, JSONStorage, SMTPSettings
from smtpserver import SMTPTestServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BOB = "bob@example.org"


def load(name: str) -> ModuleType:
    """Import examples/<name>.py as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def storage_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"json://{tmp_path}/accounts.json"
    monkeypatch.setenv("MAILPOOL_STORAGE", url)
    yield url


@pytest.fixture
def add_account(
    storage_url: str, smtp_server: SMTPTestServer
) -> Callable[..., Account]:
    def add(email: str = "alice@example.com", **fields: Any) -> Account:
        fields.setdefault("min_wait_time", 0)
        account = Account(
            email=email,
            smtp=SMTPSettings(
                host=smtp_server.host, port=smtp_server.port, use_tls=False
            ),
            **fields,
        )
        storage = JSONStorage(storage_url.removeprefix("json://"))
        try:
            return storage.add(account)
        finally:
            storage.close()

    return add


# -- FastAPI ------------------------------------------------------------------


@pytest.fixture
def fastapi_client() -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(load("fastapi_app").app) as client:  # runs the lifespan
        yield client


def test_fastapi_sends_and_closes_its_pool(
    add_account: Callable[..., Account], smtp_server: SMTPTestServer
) -> None:
    from fastapi.testclient import TestClient

    add_account()
    with TestClient(load("fastapi_app").app) as client:
        response = client.post("/invitations", json={"to": BOB, "name": "Bob"})
        assert response.status_code == 200, response.text
        assert response.json()["sent_by"] == "alice@example.com"
        assert "QUIT" not in smtp_server.commands  # the session stays open
    assert smtp_server.messages[0].rcpt_tos == (BOB,)
    assert "Hello Bob" in smtp_server.messages[0].message.get_content()
    assert "QUIT" in smtp_server.commands  # closed with the app


def test_fastapi_answers_invalid_input_with_422(
    add_account: Callable[..., Account], fastapi_client: Any
) -> None:
    add_account()
    response = fastapi_client.post("/invitations", json={"to": "not an address"})
    assert response.status_code == 422
    assert "not a valid email address" in response.json()["detail"]


def test_fastapi_answers_a_refused_recipient_with_422(
    add_account: Callable[..., Account],
    smtp_server: SMTPTestServer,
    fastapi_client: Any,
) -> None:
    add_account()
    smtp_server.reject_recipient(BOB)
    response = fastapi_client.post("/invitations", json={"to": BOB})
    assert response.status_code == 422


def test_fastapi_gives_up_without_retry_after_when_waiting_cannot_help(
    add_account: Callable[..., Account], fastapi_client: Any
) -> None:
    add_account(status=AccountStatus.INACTIVE)
    response = fastapi_client.post("/invitations", json={"to": BOB})
    assert response.status_code == 503
    assert "retry-after" not in response.headers


def test_fastapi_says_when_to_come_back_at_the_daily_limit(
    add_account: Callable[..., Account], fastapi_client: Any
) -> None:
    add_account(daily_limit=0)
    response = fastapi_client.post("/invitations", json={"to": BOB})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0


def test_fastapi_answers_a_server_failure_with_502(
    add_account: Callable[..., Account],
    smtp_server: SMTPTestServer,
    fastapi_client: Any,
) -> None:
    add_account()
    smtp_server.fail_next("MAIL", "554 5.7.1 sender refused")
    response = fastapi_client.post("/invitations", json={"to": BOB})
    assert response.status_code == 502


# -- Flask --------------------------------------------------------------------


@pytest.fixture
def flask_app(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, list[Callable[[], None]]]]:
    at_exit: list[Callable[[], None]] = []
    monkeypatch.setattr("atexit.register", at_exit.append)
    app = load("flask_app").create_app(storage_url)
    yield app, at_exit
    for close in at_exit:
        close()


def test_flask_sends_and_closes_its_pool_at_exit(
    add_account: Callable[..., Account],
    smtp_server: SMTPTestServer,
    flask_app: tuple[Any, list[Callable[[], None]]],
) -> None:
    add_account()
    app, at_exit = flask_app
    response = app.test_client().post("/invitations", json={"to": BOB, "name": "Bob"})
    assert response.status_code == 200, response.text
    assert "Hello Bob" in smtp_server.messages[0].message.get_content()
    assert "QUIT" not in smtp_server.commands
    [close] = at_exit
    close()
    assert "QUIT" in smtp_server.commands


@pytest.mark.parametrize(
    ("fields", "to", "status"),
    [
        ({}, "not an address", 422),
        ({"status": AccountStatus.INACTIVE}, BOB, 503),
        ({"daily_limit": 0}, BOB, 503),
    ],
)
def test_flask_maps_mailpool_errors_to_http(
    add_account: Callable[..., Account],
    flask_app: tuple[Any, list[Callable[[], None]]],
    fields: dict[str, Any],
    to: str,
    status: int,
) -> None:
    add_account(**fields)
    response = flask_app[0].test_client().post("/invitations", json={"to": to})
    assert response.status_code == status
    at_limit = fields.get("daily_limit") == 0
    assert ("Retry-After" in response.headers) is at_limit


def test_flask_answers_refusals_and_failures(
    add_account: Callable[..., Account],
    smtp_server: SMTPTestServer,
    flask_app: tuple[Any, list[Callable[[], None]]],
) -> None:
    add_account()
    client = flask_app[0].test_client()
    smtp_server.reject_recipient(BOB)
    assert client.post("/invitations", json={"to": BOB}).status_code == 422
    smtp_server.fail_next("MAIL", "554 5.7.1 sender refused")
    assert (
        client.post("/invitations", json={"to": "carol@example.org"}).status_code == 502
    )


# -- any task queue -----------------------------------------------------------


@pytest.fixture
def task_queue() -> ModuleType:
    return load("task_queue")


def job(to: str = BOB) -> dict[str, str]:
    return {"to": to, "subject": "Hello", "body": "Hi."}


def test_send_job_says_done_retry_or_give_up(
    add_account: Callable[..., Account],
    smtp_server: SMTPTestServer,
    storage_url: str,
    task_queue: ModuleType,
) -> None:
    from mailpool import AccountPool, open_storage

    with AccountPool(open_storage(storage_url)) as pool:
        assert task_queue.send_job(pool, job()).action == "give_up"  # no account
        add_account(min_wait_time=60)
        done = task_queue.send_job(pool, job())
        assert (done.action, done.message_id) == (
            "done",
            smtp_server.messages[0].message["Message-ID"],
        )
        waiting = task_queue.send_job(pool, job())
        assert waiting.action == "retry" and 50 < waiting.delay <= 60
        assert task_queue.send_job(pool, job("not an address")).action == "give_up"


def test_send_job_retries_server_failures_and_gives_up_on_refusals(
    add_account: Callable[..., Account],
    smtp_server: SMTPTestServer,
    storage_url: str,
    task_queue: ModuleType,
) -> None:
    from mailpool import AccountPool, open_storage

    add_account()
    with AccountPool(open_storage(storage_url)) as pool:
        smtp_server.fail_next("MAIL", "554 5.7.1 sender refused")
        failed = task_queue.send_job(pool, job(), attempt=2)
        assert (failed.action, failed.delay) == ("retry", 60.0)
        smtp_server.reject_recipient(BOB)
        assert task_queue.send_job(pool, job()).action == "give_up"


def test_run_worker_retries_until_done_and_hands_back_late_retries(
    add_account: Callable[..., Account],
    smtp_server: SMTPTestServer,
    storage_url: str,
    task_queue: ModuleType,
) -> None:
    from mailpool import AccountPool, open_storage

    add_account(min_wait_time=0.2, daily_limit=2)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        import time

        time.sleep(seconds)

    jobs = [job("a@example.org"), job("b@example.org"), job("c@example.org")]
    with AccountPool(open_storage(storage_url)) as pool:
        outcomes = task_queue.run_worker(pool, jobs, max_delay=0.5, sleep=sleep)
    assert sorted(o.action for o in outcomes) == ["done", "done", "retry"]
    [late] = [o for o in outcomes if o.action == "retry"]
    assert late.delay > 0.5  # the daily limit: until midnight, for a scheduler
    assert sleeps and all(0 < s <= 0.2 for s in sleeps)  # waited for the pacing
    assert len(smtp_server.messages) == 2


def test_task_queue_main_sends_and_closes_its_pool(
    add_account: Callable[..., Account],
    smtp_server: SMTPTestServer,
    task_queue: ModuleType,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_account()
    assert task_queue.main([BOB, "carol@example.org"]) == 0
    assert len(smtp_server.messages) == 2
    assert "QUIT" in smtp_server.commands
    assert capsys.readouterr().out.startswith(f"{BOB}: done: sent by alice@example.com")
    assert task_queue.main(["not an address"]) == 1
