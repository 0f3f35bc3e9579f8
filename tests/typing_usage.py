"""The public API as a user's code writes it, checked by ``mypy --strict``.

The main mypy gate checks this file with pydantic's mypy plugin;
``python tests/docsnippets.py typecheck`` checks it again without the plugin,
as a user's project is configured by default. Strings for secrets and plain
sets for tags must be accepted, and the values must read back with their
model types. tests/test_packaging.py runs the functions, so what type-checks
also works.
"""

from __future__ import annotations

from email.message import EmailMessage

from pydantic import SecretStr

from mailpool import (
    Account,
    AccountPool,
    AccountStatus,
    ConnectionTestResult,
    LeastUsedSelector,
    NoAccountAvailable,
    NoAccountReason,
    OAuth2Credentials,
    RetryPolicy,
    SendResult,
    SMTPSettings,
    Storage,
    Transport,
    open_storage,
)


def build_accounts() -> list[Account]:
    settings = SMTPSettings(
        host="smtp.example.com",
        port=587,
        use_tls=True,
        username="alice@example.com",
        password="app-password",
    )
    password: SecretStr | None = settings.password
    assert password is not None and password.get_secret_value() == "app-password"

    alice = Account(
        email="alice@example.com",
        sender_name="Alice Example",
        owner="acme",
        tags={"spring-campaign"},
        status=AccountStatus.ACTIVE,
        daily_limit=2,
        min_wait_time=0.0,
        smtp=settings,
    )
    tags: frozenset[str] = alice.tags
    assert tags == frozenset({"spring-campaign"})

    oauth = OAuth2Credentials(
        access_token="ya29.token",
        refresh_token="1//refresh",
        client_id="client",
        client_secret="client-secret",
    )
    token: SecretStr | None = oauth.access_token
    assert token is not None
    outlook = Account.for_provider(
        "outlook", email="me@contoso.com", oauth2=oauth, tags=frozenset({"b"})
    )
    gmail = Account.for_provider("gmail", email="me@gmail.com", password="app-pw")
    return [alice, alice.replace(tags={"other"}), outlook, gmail]


def send_through(storage: Storage, transport: Transport) -> list[SendResult]:
    with AccountPool(
        storage,
        owner="acme",
        tag="spring-campaign",
        selector=LeastUsedSelector(),
        transport=transport,
        retry=RetryPolicy(attempts=2, initial_wait=0.1, max_wait=1.0),
    ) as pool:
        first = pool.send_mail(subject="Hi", body="Hello", to=["bob@example.org"])
        message = EmailMessage()
        message["To"] = "bob@example.org"
        message["Subject"] = "Hello again"
        message.set_content("...")
        results = [first, pool.send(message)]
        checks: list[ConnectionTestResult] = pool.test_connections()
        assert all(check.success for check in checks)
        try:
            pool.send_mail(subject="Hi", body="...", to="carol@example.org")
        except NoAccountAvailable as exc:
            reason: NoAccountReason = exc.reason
            retry_after: float | None = exc.retry_after
            assert reason is NoAccountReason.ALL_AT_LIMIT and retry_after
        return results


def open_memory() -> Storage:
    return open_storage("memory://")
