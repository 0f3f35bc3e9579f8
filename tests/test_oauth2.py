"""OAuth2 accounts: XOAUTH2 with access tokens renewed by the refresh-token
grant, against real local peers: aiosmtpd (implicit TLS, XOAUTH2 checked
against the token server) and an HTTPS token endpoint (tests/tokenserver.py)."""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
import workers
from pydantic import SecretStr

from mailpool import (
    PROVIDERS,
    Account,
    AccountPool,
    AccountStatus,
    AuthenticationError,
    ConfigurationError,
    ConnectionType,
    InMemoryStorage,
    JSONStorage,
    OAuth2Credentials,
    RetryPolicy,
    SendError,
    SMTPSettings,
    SMTPTransport,
    Storage,
    TemporarySendError,
    open_storage,
)
from mailpool.providers import GOOGLE_TOKEN_URL, microsoft_token_url
from mailpool.transport import RefreshTokenGrant, TokenProvider
from mailpool.transport.oauth2 import TokenStore
from pooltools import ALICE, BOB, RECIPIENT, first, send
from smtpserver import USERS, SMTPTestServer
from tokenserver import CLIENT_ID, CLIENT_SECRET, TokenServer, send_from_processes

HOUR = timedelta(hours=1)


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def tokens(server_tls_context: ssl.SSLContext) -> Iterator[TokenServer]:
    """The token endpoint over HTTPS, rotating refresh tokens (Microsoft's way)."""
    with TokenServer(tls_context=server_tls_context) as server:
        yield server


@pytest.fixture
def smtpd(
    server_tls_context: ssl.SSLContext, tokens: TokenServer
) -> Iterator[SMTPTestServer]:
    """Implicit-TLS submission: passwords of USERS, or XOAUTH2 with any access
    token the token server issued (and did not revoke)."""
    with SMTPTestServer(
        mode="tls",
        users=USERS,
        require_auth=True,
        tls_context=server_tls_context,
        oauth_validator=tokens.accepts,
    ) as server:
        yield server


@pytest.fixture
def provider(client_ssl_context: ssl.SSLContext) -> RefreshTokenGrant:
    return RefreshTokenGrant(ssl_context=client_ssl_context, timeout=2.0)


@pytest.fixture
def transport(
    client_ssl_context: ssl.SSLContext, provider: RefreshTokenGrant
) -> Iterator[SMTPTransport]:
    transport = SMTPTransport(
        timeout=5.0, ssl_context=client_ssl_context, token_provider=provider
    )
    yield transport
    transport.close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def storage() -> InMemoryStorage:
    return InMemoryStorage()


def oauth_account(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    email: str = ALICE,
    *,
    access_token: str | None = "ya29.stale",
    expiry: datetime | None = None,
    **credentials: Any,
) -> Account:
    """An account on ``smtpd`` with a fresh grant at ``tokens`` whose stored
    access token expired an hour ago (unless told otherwise)."""
    fields: dict[str, Any] = {
        "access_token": access_token,
        "refresh_token": tokens.grant(email),
        "token_expiry": expiry or _now() - HOUR,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_url": tokens.url,
        **credentials,
    }
    return Account(
        email=email,
        smtp=_tls(smtpd),
        oauth2=OAuth2Credentials(**fields),
        min_wait_time=0,
    )


def password_account(smtpd: SMTPTestServer, email: str = BOB) -> Account:
    smtp = _tls(smtpd).model_copy(update={"password": SecretStr(USERS[email])})
    return Account(email=email, smtp=smtp, min_wait_time=0)


def _tls(smtpd: SMTPTestServer) -> SMTPSettings:
    return SMTPSettings(host=smtpd.host, port=smtpd.port, use_tls=False, use_ssl=True)


def make_pool(
    storage: Storage, transport: SMTPTransport, sleeps: list[float], **options: Any
) -> AccountPool:
    defaults: dict[str, Any] = {
        "transport": transport,
        "selector": first,  # alice (the OAuth2 account) first, then bob
        "retry": RetryPolicy(jitter=False, sleep=sleeps.append),
    }
    return AccountPool(storage, **{**defaults, **options})


def message() -> EmailMessage:
    mail = EmailMessage()
    mail["To"] = RECIPIENT
    mail["Subject"] = "Hello"
    mail.set_content("Hi Dave.")
    return mail


def stored_tokens(storage: Storage, account: Account) -> tuple[str, str, datetime]:
    oauth = storage.get(account.id).oauth2
    assert oauth is not None
    assert oauth.access_token is not None and oauth.refresh_token is not None
    assert oauth.token_expiry is not None
    return (
        oauth.access_token.get_secret_value(),
        oauth.refresh_token.get_secret_value(),
        oauth.token_expiry,
    )


# -- renewing tokens ------------------------------------------------------------------


def test_an_expired_token_is_renewed_before_sending_and_saved(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    alice = storage.add(oauth_account(smtpd, tokens))
    grant = tokens.requests

    result = send(make_pool(storage, transport, sleeps))

    assert result.account_email == ALICE and grant == []
    assert smtpd.wait_for_messages(1)[0].auth_user == ALICE
    (request,) = tokens.requests
    assert_refresh_form(request, alice)
    (issue,) = tokens.issued
    access, refresh, expiry = stored_tokens(storage, alice)
    assert (access, refresh) == (issue.access_token, issue.refresh_token)
    assert refresh != alice_refresh(alice)  # rotated, and the new one saved
    assert _now() + HOUR - timedelta(minutes=1) < expiry <= _now() + HOUR
    assert smtpd.auth_attempts == 1  # the expired token was never tried


def assert_refresh_form(request: dict[str, str], account: Account) -> None:
    assert request == {
        "grant_type": "refresh_token",
        "refresh_token": alice_refresh(account),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


def alice_refresh(account: Account) -> str:
    assert account.oauth2 is not None and account.oauth2.refresh_token is not None
    return account.oauth2.refresh_token.get_secret_value()


def test_a_valid_token_is_used_without_calling_the_endpoint(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    minted = tokens.mint(ALICE)
    alice = storage.add(
        oauth_account(
            smtpd, tokens, access_token=minted.access_token, expiry=_now() + HOUR
        )
    )

    send(make_pool(storage, transport, sleeps))

    assert tokens.requests == []
    assert storage.get(alice.id).oauth2 == alice.oauth2


def test_a_token_expiring_within_the_margin_is_renewed(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    minted = tokens.mint(ALICE)
    soon = _now() + timedelta(seconds=transport.token_refresh_margin / 2)
    storage.add(
        oauth_account(smtpd, tokens, access_token=minted.access_token, expiry=soon)
    )

    send(make_pool(storage, transport, sleeps))

    assert len(tokens.requests) == 1


def test_a_token_the_server_refuses_is_renewed_and_the_login_retried_once(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    # Not expired as far as the account knows, but revoked at the server.
    alice = storage.add(oauth_account(smtpd, tokens, expiry=_now() + HOUR))

    result = send(make_pool(storage, transport, sleeps))

    assert result.account_email == ALICE and result.attempts == 1
    assert smtpd.auth_attempts == 2
    assert len(tokens.requests) == 1
    assert stored_tokens(storage, alice)[0] == tokens.issued[0].access_token


def test_a_renewed_token_the_server_still_refuses_marks_the_account_error(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    alice = storage.add(oauth_account(smtpd, tokens, expiry=_now() + HOUR))
    storage.add(password_account(smtpd))
    refusal = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is "
    smtpd.fail_next("AUTH", refusal + "disabled for the Tenant.", times=2)

    result = send(make_pool(storage, transport, sleeps))

    assert result.account_email == BOB  # failed over
    assert len(tokens.requests) == 1  # one renewal, not one per try
    stored = storage.get(alice.id)
    assert stored.status is AccountStatus.ERROR
    assert stored.status_reason is not None and "5.7.139" in stored.status_reason


def test_a_revoked_grant_sets_the_account_to_error_and_the_pool_fails_over(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    alice = storage.add(oauth_account(smtpd, tokens))
    storage.add(password_account(smtpd))
    tokens.revoke(ALICE)

    result = send(make_pool(storage, transport, sleeps))

    assert result.account_email == BOB
    stored = storage.get(alice.id)
    assert stored.status is AccountStatus.ERROR
    reason = stored.status_reason or ""
    assert "invalid_grant" in reason and "Token has been expired or revoked" in reason
    assert "Authorize the account again" in reason
    assert smtpd.auth_attempts == 1  # bob's: alice never tried a dead token
    assert sleeps == []  # not retried


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (500, {"error": "server_error"}),
        (503, "<html>Service Unavailable</html>"),
        (429, {"error": "rate_limited"}),
        (400, {"error": "temporarily_unavailable"}),
    ],
    ids=["500", "503-html", "429", "temporarily_unavailable"],
)
def test_a_temporary_endpoint_failure_is_retried_and_does_not_mark_the_account(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
    status: int,
    payload: dict[str, str] | str,
) -> None:
    alice = storage.add(oauth_account(smtpd, tokens))
    tokens.fail_next(status, payload, times=3)
    pool = make_pool(storage, transport, sleeps, failover=0)

    with pytest.raises(TemporarySendError, match="for now") as info:
        send(pool)

    assert info.value.account_id == alice.id
    assert len(tokens.requests) == 3 and sleeps == [0.5, 1.0]  # with backoff
    assert storage.get(alice.id).status is AccountStatus.ACTIVE
    assert storage.get(alice.id).sent_on(pool.now().date()) == 0
    send(pool)  # the endpoint is back
    assert len(tokens.issued) == 1


def test_a_temporary_failure_fails_over_without_marking(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    alice = storage.add(oauth_account(smtpd, tokens))
    storage.add(password_account(smtpd))
    tokens.fail_next(502, times=3)

    assert send(make_pool(storage, transport, sleeps)).account_email == BOB
    assert storage.get(alice.id).status is AccountStatus.ACTIVE


def test_a_slow_endpoint_times_out_as_a_temporary_failure(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    client_ssl_context: ssl.SSLContext,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    alice = storage.add(oauth_account(smtpd, tokens))
    reached = tokens.stall_next(5.0)
    provider = RefreshTokenGrant(ssl_context=client_ssl_context, timeout=0.3)
    transport = SMTPTransport(ssl_context=client_ssl_context, token_provider=provider)
    pool = make_pool(
        storage, transport, sleeps, failover=0, retry=RetryPolicy(attempts=1)
    )

    with (
        contextlib.closing(transport),
        pytest.raises(TemporarySendError, match=r"within 0\.3 s"),
    ):
        send(pool)

    assert reached.is_set()
    assert storage.get(alice.id).status is AccountStatus.ACTIVE


def test_the_endpoint_certificate_is_verified(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    client_ssl_context: ssl.SSLContext,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    alice = storage.add(oauth_account(smtpd, tokens))
    # The system's CAs do not trust the test CA.
    transport = SMTPTransport(
        ssl_context=client_ssl_context, token_provider=RefreshTokenGrant()
    )
    pool = make_pool(storage, transport, sleeps, failover=0)

    with (
        contextlib.closing(transport),
        pytest.raises(SendError, match="could not be verified") as info,
    ):
        send(pool)

    assert not isinstance(info.value, (TemporarySendError, AuthenticationError))
    assert storage.get(alice.id).status is AccountStatus.ACTIVE
    assert tokens.requests == []


@pytest.mark.parametrize(
    ("status", "payload", "advice"),
    [
        (401, {"error": "invalid_client"}, "check client_id and client_secret"),
        (400, {"error": "invalid_scope"}, "check token_url, client_id and scope"),
        (404, "Not Found", "check token_url"),
    ],
    ids=["invalid_client", "invalid_scope", "404"],
)
def test_a_refusal_for_good_marks_the_account_with_what_to_fix(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
    status: int,
    payload: dict[str, str] | str,
    advice: str,
) -> None:
    alice = storage.add(oauth_account(smtpd, tokens))
    tokens.fail_next(status, payload)

    with pytest.raises(AuthenticationError, match=advice):
        send(make_pool(storage, transport, sleeps, failover=0))

    stored = storage.get(alice.id)
    assert stored.status is AccountStatus.ERROR
    assert advice in (stored.status_reason or "")


def test_an_answer_without_an_access_token_is_an_error(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    storage.add(oauth_account(smtpd, tokens))
    tokens.fail_next(200, {"token_type": "Bearer"})

    with pytest.raises(SendError, match="without a bearer access token"):
        send(make_pool(storage, transport, sleeps, failover=0))


def test_missing_client_id_says_what_to_store(
    smtpd: SMTPTestServer, tokens: TokenServer, transport: SMTPTransport
) -> None:
    account = oauth_account(smtpd, tokens, client_id=None)

    with pytest.raises(AuthenticationError, match="no client_id"):
        transport.send(account, message())
    assert tokens.requests == []


def test_client_and_endpoint_may_come_from_the_provider(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    account = oauth_account(
        smtpd, tokens, client_id=None, client_secret=None, token_url=None
    )
    provider = RefreshTokenGrant(
        ssl_context=client_ssl_context,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_url=tokens.url,
    )

    transport = SMTPTransport(ssl_context=client_ssl_context, token_provider=provider)
    with contextlib.closing(transport) as t:
        t.send(account, message())

    assert len(tokens.issued) == 1


def test_an_account_with_only_a_refresh_token_logs_in(
    smtpd: SMTPTestServer, tokens: TokenServer, transport: SMTPTransport
) -> None:
    account = oauth_account(smtpd, tokens, access_token=None, expiry=None)

    assert "logged in as alice@example.com" in transport.check(account)
    transport.send(account, message())
    assert len(tokens.issued) == 1  # the check's token is reused by the send


def test_a_google_style_refresh_keeps_the_refresh_token(
    smtpd: SMTPTestServer,
    server_tls_context: ssl.SSLContext,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    with TokenServer(tls_context=server_tls_context, rotate=False) as google:
        smtpd.oauth_validator = google.accepts
        alice = storage.add(oauth_account(smtpd, google))

        send(make_pool(storage, transport, sleeps))

        assert stored_tokens(storage, alice)[1] == alice_refresh(alice)
        assert stored_tokens(storage, alice)[0] == google.issued[0].access_token


def test_a_plain_http_endpoint_is_accepted_on_loopback_only(
    smtpd: SMTPTestServer, transport: SMTPTransport
) -> None:
    with pytest.raises(ConfigurationError, match="unencrypted"):
        OAuth2Credentials(token_url="http://login.example.com/token")
    with pytest.raises(ConfigurationError, match="unencrypted"):
        RefreshTokenGrant(token_url="http://10.0.0.1/token")
    with pytest.raises(ConfigurationError, match="https://"):
        OAuth2Credentials(token_url="https://user:pw@login.example.com/token")

    with TokenServer(tls_context=None) as plain:
        smtpd.oauth_validator = plain.accepts
        assert plain.url.startswith("http://127.0.0.1:")
        transport.send(oauth_account(smtpd, plain), message())
        assert len(plain.issued) == 1


# -- the newest tokens, across workers ------------------------------------------


class AtomicMemoryStorage(InMemoryStorage):
    """An InMemoryStorage with the optional TokenStore method."""

    def __init__(self) -> None:
        super().__init__()
        self.token_saves = 0
        self._save_lock = threading.Lock()

    def save_oauth2_tokens(
        self,
        account_id: str,
        tokens: OAuth2Credentials,
        /,
        *,
        replacing: SecretStr | None,
    ) -> Account:
        with self._save_lock:
            self.token_saves += 1
            stored = self.get(account_id)
            if stored.oauth2 is None or stored.oauth2.refresh_token != replacing:
                return stored
            fields = ("access_token", "refresh_token", "token_expiry")
            new = stored.oauth2.model_copy(
                update={name: getattr(tokens, name) for name in fields}
            )
            return self.update(stored.replace(oauth2=new))


@pytest.fixture(params=["memory", "json", "token-store"])
def shared_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    makers: dict[str, Callable[[], Storage]] = {
        "memory": InMemoryStorage,
        "json": lambda: JSONStorage(tmp_path / "accounts.json"),
        "token-store": AtomicMemoryStorage,
    }
    opened = makers[request.param]()
    with contextlib.closing(opened):
        yield opened
    if isinstance(opened, AtomicMemoryStorage):
        assert opened.token_saves > 0


def test_the_token_store_protocol_is_optional() -> None:
    assert isinstance(AtomicMemoryStorage(), TokenStore)
    assert not isinstance(InMemoryStorage(), TokenStore)


def test_threads_renewing_one_account_call_the_endpoint_once(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    shared_storage: Storage,
    sleeps: list[float],
) -> None:
    alice = shared_storage.add(
        oauth_account(smtpd, tokens).replace(max_in_flight=8, daily_limit=100)
    )
    pool = make_pool(shared_storage, transport, sleeps, failover=0)
    mails = [message() for _ in range(8)]

    outcomes = pool.send_many(mails, concurrency=8, wait=10)

    assert all(not isinstance(outcome, Exception) for outcome in outcomes), outcomes
    assert len(tokens.requests) == 1
    assert stored_tokens(shared_storage, alice)[1] == tokens.issued[0].refresh_token


def test_a_stale_worker_uses_the_stored_tokens_instead_of_renewing(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    shared_storage: Storage,
    sleeps: list[float],
) -> None:
    stale = shared_storage.add(oauth_account(smtpd, tokens))
    send(make_pool(shared_storage, transport, sleeps))  # renews and saves
    assert len(tokens.requests) == 1

    # Another process still holds the account as it was before the renewal.
    with contextlib.closing(
        SMTPTransport(
            ssl_context=transport.ssl_context, token_provider=transport.token_provider
        )
    ) as other:
        other.bind_storage(shared_storage)
        other.send(stale, message())

    assert len(tokens.requests) == 1
    assert len(smtpd.wait_for_messages(2)) == 2


class _RacedProvider:
    """Renews like ``inner``, but another worker renews (and saves) the same
    account first, while this request is on its way."""

    def __init__(self, inner: TokenProvider, storage: Storage) -> None:
        self.inner = inner
        self.storage = storage
        self.winner: OAuth2Credentials | None = None

    def refresh(self, account: Account, /) -> OAuth2Credentials | None:
        if self.winner is None:
            self.winner = self.inner.refresh(account)
            assert self.winner is not None
            self.storage.update(
                self.storage.get(account.id).replace(oauth2=self.winner)
            )
        return self.inner.refresh(account)


def test_a_late_renewal_never_replaces_the_newer_stored_refresh_token(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    client_ssl_context: ssl.SSLContext,
    provider: RefreshTokenGrant,
    shared_storage: Storage,
    sleeps: list[float],
) -> None:
    alice = shared_storage.add(oauth_account(smtpd, tokens))
    raced = _RacedProvider(provider, shared_storage)
    transport = SMTPTransport(ssl_context=client_ssl_context, token_provider=raced)

    with contextlib.closing(transport):
        send(make_pool(shared_storage, transport, sleeps))
        send(make_pool(shared_storage, transport, sleeps))

    first_issue, late_issue = tokens.issued  # both from the same refresh token
    assert late_issue.parent == first_issue.parent == alice_refresh(alice)
    access, refresh, _ = stored_tokens(shared_storage, alice)
    assert (access, refresh) == (first_issue.access_token, first_issue.refresh_token)
    assert len(tokens.requests) == 2  # the second send used the stored tokens


def test_a_refusal_after_another_worker_rotated_the_token_is_not_an_error(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    shared_storage: Storage,
    sleeps: list[float],
) -> None:
    stale = shared_storage.add(oauth_account(smtpd, tokens))
    send(make_pool(shared_storage, transport, sleeps))  # rotates and saves
    # Strict rotation: the old refresh token is now refused.
    tokens.fail_next(400, {"error": "invalid_grant"})
    stored = shared_storage.get(stale.id)
    assert stored.oauth2 is not None
    expired = stored.oauth2.model_copy(update={"token_expiry": _now() + HOUR})
    shared_storage.update(stored.replace(oauth2=expired))

    with contextlib.closing(
        SMTPTransport(
            ssl_context=transport.ssl_context, token_provider=transport.token_provider
        )
    ) as other:
        other.bind_storage(shared_storage)
        # The stale copy is expired; the stored one is not: no endpoint call.
        other.send(stale, message())

    assert len(tokens.requests) == 1


storage_url = workers.storage_url_fixture()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("sends", "expires_in", "reuse"),
    [(2, 3600, True), (4, 60, False)],
    ids=["one-expiry", "renewed-every-send"],
)
def test_processes_renewing_one_account_at_once_keep_the_newest_token(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    tls_ca: trustme.CA,
    storage_url: str,
    sends: int,
    expires_in: int,
    reuse: bool,
) -> None:
    """Two processes of three threads send through one account whose token
    has expired. With ``expires_in`` under the transport's margin of 300 s,
    every new session renews the token, so renewals race all the time."""
    processes, threads = 2, 3
    tokens.expires_in = expires_in
    with contextlib.closing(open_storage(storage_url)) as storage:
        alice = storage.add(
            oauth_account(smtpd, tokens).replace(max_in_flight=6, daily_limit=1000)
        )

    sent = workers.run_children(
        send_from_processes,
        (storage_url, tls_ca.cert_pem.bytes(), tokens.url, sends, reuse),
        processes=processes,
        threads=threads,
    )

    total = processes * threads * sends
    assert sum(len(ids) for per_process in sent for ids in per_process) == total
    assert len(smtpd.wait_for_messages(total)) == total
    issued = tokens.issued
    with contextlib.closing(open_storage(storage_url)) as storage:
        stored = storage.get(alice.id)
        access, refresh, _ = stored_tokens(storage, alice)
    assert stored.status is AccountStatus.ACTIVE
    issue = tokens.issue_of(refresh)
    assert issue is not None and issue.access_token == access  # one response
    assert issue.generation == max(i.generation for i in issued)  # the newest
    if expires_in > 300:
        assert len(issued) <= processes  # at most one renewal per process
    else:
        assert len(issued) >= 2


# -- secrets --------------------------------------------------------------------------


def test_no_token_or_client_secret_in_logs_errors_or_tracebacks(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    provider: RefreshTokenGrant,
    storage: InMemoryStorage,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = storage.add(oauth_account(smtpd, tokens))
    pool = make_pool(storage, transport, sleeps, failover=0)
    errors: list[BaseException] = []
    traces: list[str] = []

    send(pool)  # renewed, rotated and saved
    tokens.fail_next(500, {"error": "server_error"}, times=3)
    tokens.fail_next(
        400,
        {
            "error": "invalid_grant",
            "error_description": f"refresh token {tokens.issued[0].refresh_token} "
            f"of client secret {CLIENT_SECRET} revoked",
        },
    )
    expire(storage, alice)
    # Another process, whose transport holds no newer tokens, fails to renew.
    other = SMTPTransport(ssl_context=transport.ssl_context, token_provider=provider)
    with contextlib.closing(other):
        for _ in range(2):
            with pytest.raises(SendError) as info:
                send(make_pool(storage, other, sleeps, failover=0))
            errors.append(info.value)
            # Formatted now, while this frame holds no secret of its own.
            traces.append(
                "".join(
                    traceback.TracebackException.from_exception(
                        info.value, capture_locals=True
                    ).format()
                )
            )

    assert isinstance(errors[0], TemporarySendError)
    assert isinstance(errors[1], AuthenticationError)
    stored = storage.get(alice.id)
    assert stored.status is AccountStatus.ERROR
    secrets = [CLIENT_SECRET, alice_refresh(alice)]
    for issue in tokens.issued:
        secrets += [issue.access_token, issue.refresh_token]
    texts = [
        caplog.text,
        stored.status_reason or "",
        repr(stored),
        str(stored.oauth2),
        repr(transport.token_provider),
        *traces,
    ]
    assert "renewed the OAuth2 access token of alice@example.com" in caplog.text
    for text in texts:
        for secret in secrets:
            assert secret not in text
    for error in errors:
        cause = error.__cause__
        assert error.__context__ is None
        assert cause is None or cause.__traceback__ is None


def expire(storage: Storage, account: Account) -> None:
    stored = storage.get(account.id)
    assert stored.oauth2 is not None
    old = stored.oauth2.model_copy(update={"token_expiry": _now() - HOUR})
    storage.update(stored.replace(oauth2=old))


# -- providers, models and storages ---------------------------------------------------


def test_a_password_login_refused_for_basic_auth_says_oauth2_is_required(
    smtpd: SMTPTestServer, transport: SMTPTransport
) -> None:
    smtpd.fail_next(
        "AUTH",
        "550 5.7.30 Basic authentication is not supported for Client Submission.",
    )

    with pytest.raises(AuthenticationError, match="requires OAuth2") as info:
        transport.send(password_account(smtpd), message())
    assert info.value.smtp_code == 550
    assert "docs/oauth2.md" in str(info.value)


def test_the_presets_carry_the_token_endpoints() -> None:
    assert PROVIDERS["gmail"].token_url == GOOGLE_TOKEN_URL
    assert PROVIDERS["gmail"].scope == "https://mail.google.com/"
    assert PROVIDERS["outlook"].token_url == microsoft_token_url("common")
    assert PROVIDERS["outlook"].scope is not None
    assert "SMTP.Send" in PROVIDERS["outlook"].scope
    assert PROVIDERS["outlook"].host == "smtp.office365.com"
    assert (
        microsoft_token_url("contoso.onmicrosoft.com")
        == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    with pytest.raises(ConfigurationError, match="tenant"):
        microsoft_token_url("contoso/../evil")


def test_an_outlook_account_renews_at_its_tenant_endpoint_by_default() -> None:
    account = Account.for_provider(
        "outlook",
        email="me@contoso.com",
        oauth2=OAuth2Credentials(refresh_token="r", client_id="c"),
    )
    assert account.connection_type is ConnectionType.OUTLOOK
    common = account.oauth2
    tenant = OAuth2Credentials(
        refresh_token="r", client_id="c", token_url=microsoft_token_url("t-1")
    )
    assert common is not None and common.refresh_token is not None
    assert tenant.refresh_token is not None

    # Resolved without sending anything.
    grant = RefreshTokenGrant()._grant(account, common, common.refresh_token)
    assert grant.token_url == microsoft_token_url("common")
    assert grant.scope == PROVIDERS["outlook"].scope
    grant = RefreshTokenGrant()._grant(account, tenant, tenant.refresh_token)
    assert grant.token_url == microsoft_token_url("t-1")


def test_client_secrets_are_secret() -> None:
    credentials = OAuth2Credentials(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token="1//r"
    )
    assert CLIENT_SECRET not in repr(credentials) + str(credentials)
    provider = RefreshTokenGrant(client_secret=CLIENT_SECRET)
    assert CLIENT_SECRET not in repr(provider) + repr(vars(provider))


@pytest.mark.parametrize("kind", ["memory", "json", "sqlite"])
def test_every_storage_keeps_the_oauth2_client_fields(
    kind: str, tmp_path: Path
) -> None:
    if kind == "sqlite":
        pytest.importorskip("sqlalchemy")
    url = {
        "memory": "memory://",
        "json": f"json://{tmp_path / 'a.json'}",
        "sqlite": f"sqlite:///{tmp_path / 'a.db'}",
    }[kind]
    account = Account.for_provider(
        "outlook",
        email="me@contoso.com",
        oauth2=OAuth2Credentials(
            access_token="ya29.a",
            refresh_token="1//r",
            token_expiry=_now().replace(microsecond=0),
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token_url=microsoft_token_url("contoso.onmicrosoft.com"),
            scope="https://outlook.office.com/SMTP.Send offline_access",
        ),
    )
    with contextlib.closing(open_storage(url)) as storage:
        storage.add(account)
        assert storage.get(account.id).oauth2 == account.oauth2


class _BrokenProvider:
    def refresh(self, account: Account, /) -> OAuth2Credentials | None:
        raise KeyError(CLIENT_SECRET)


def test_a_broken_token_provider_is_a_send_error_without_its_chain(
    smtpd: SMTPTestServer, tokens: TokenServer, client_ssl_context: ssl.SSLContext
) -> None:
    transport = SMTPTransport(
        ssl_context=client_ssl_context, token_provider=_BrokenProvider()
    )

    with contextlib.closing(transport), pytest.raises(SendError) as info:
        transport.send(oauth_account(smtpd, tokens), message())

    assert "KeyError" in str(info.value) and CLIENT_SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_a_connection_test_of_a_revoked_grant_reports_without_marking(
    smtpd: SMTPTestServer,
    tokens: TokenServer,
    transport: SMTPTransport,
    storage: InMemoryStorage,
    sleeps: list[float],
) -> None:
    alice = storage.add(oauth_account(smtpd, tokens))
    tokens.revoke(ALICE)

    result = make_pool(storage, transport, sleeps).test_connection(ALICE)

    assert not result.success and "invalid_grant" in result.message
    assert storage.get(alice.id).status is AccountStatus.ACTIVE
