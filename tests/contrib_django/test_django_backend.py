"""The email backend, end to end: Django's own mail API, a real SMTP server
(aiosmtpd) receiving what it sent, the accounts' counts in the database.

The first tests are the behaviours Django's shared tests of email backends
check (sending, unicode, many messages from a list or an iterator, closing,
the context manager); the rest are the pool's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.models import User
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend
from django.test.utils import override_settings
from django.utils.translation import gettext_lazy
from djangotools import BACKEND, BackendSettings, RowFactory

from mailpool import (
    Account,
    ConfigurationError,
    MessageRejected,
    NoAccountAvailable,
    SendResult,
    SMTPSettings,
    open_storage,
)
from mailpool.contrib.django.backend import EmailBackend
from mailpool.contrib.django.models import EmailAccount
from smtpserver import SMTPTestServer

pytestmark = pytest.mark.django_db

MAILERS = django.VERSION >= (6, 1)
if django.VERSION >= (6, 0):
    ADMINS: list[Any] = ["admin@example.com"]
    MANAGERS: list[Any] = ["boss@example.com"]
else:  # (name, address) pairs before Django 6.0
    ADMINS = [("Admin", "admin@example.com")]
    MANAGERS = [("Boss", "boss@example.com")]


def connection() -> BaseEmailBackend:
    """The default mailer, as Django's shared backend tests get it."""
    if MAILERS:
        backend: BaseEmailBackend = mail.mailers.default
        return backend
    return mail.get_connection()


@pytest.fixture
def alice(add_row: RowFactory) -> EmailAccount:
    return add_row("alice@example.com", sender_name="Alice Example")


@pytest.fixture
def pooled(pool_backend: BackendSettings, alice: EmailAccount) -> Iterator[None]:
    with pool_backend():
        yield


def received(server: SMTPTestServer, count: int = 1) -> list[Any]:
    return server.wait_for_messages(count)


# -- Django's contract for email backends --


@pytest.mark.usefixtures("pooled")
def test_send(smtp_server: SMTPTestServer) -> None:
    email = EmailMessage("Subject", "Content\n", "from@example.com", ["to@x.org"])
    assert connection().send_messages([email]) == 1
    [got] = received(smtp_server)
    message = got.message
    assert message["subject"] == "Subject"
    assert message.get_content() == "Content\n"
    assert message["from"] == "from@example.com"
    assert message.get_all("to") == ["to@x.org"]
    assert got.mail_from == "alice@example.com"  # the account sends it
    assert got.rcpt_tos == ("to@x.org",)


@pytest.mark.usefixtures("pooled")
def test_send_unicode(smtp_server: SMTPTestServer) -> None:
    email = EmailMessage(
        "Chère maman", "Je t'aime très fort\n", "from@example.com", ["to@example.com"]
    )
    assert connection().send_messages([email]) == 1
    message = received(smtp_server)[0].message
    assert message["subject"] == "Chère maman"
    assert message.get_content() == "Je t'aime très fort\n"


@pytest.mark.usefixtures("pooled")
def test_send_many_from_a_list_or_an_iterator(smtp_server: SMTPTestServer) -> None:
    first = EmailMessage(to=["to-1@example.com"])
    second = EmailMessage(to=["to-2@example.com"])
    assert connection().send_messages([first, second]) == 2
    assert connection().send_messages(iter((first, second))) == 2
    messages = [got.message for got in received(smtp_server, 4)]
    assert [m["To"] for m in messages] == ["to-1@example.com", "to-2@example.com"] * 2


@pytest.mark.usefixtures("pooled")
def test_close_a_connection_never_opened() -> None:
    EmailBackend(username="", password="").close()
    connection().close()


@pytest.mark.usefixtures("pooled")
def test_use_as_a_context_manager() -> None:
    backend = EmailBackend()
    calls: list[str] = []
    backend.open = lambda: calls.append("open")  # type: ignore[assignment,method-assign,return-value]
    backend.close = lambda: calls.append("close")  # type: ignore[method-assign]
    with backend as same:
        assert same is backend
        assert calls == ["open"]
    assert calls == ["open", "close"]


@pytest.mark.usefixtures("pooled")
def test_messages_as_django_renders_them(smtp_server: SMTPTestServer) -> None:
    html = EmailMultiAlternatives(
        "Subject", "Content\n", '"Firstname Sürname" <from@example.com>', ["a@x.org"]
    )
    html.attach_alternative("<p>HTML</p>\n", "text/html")
    long_line = EmailMessage(
        body="\u0412 \u044e\u0436\u043d\u044b\u0445 \u043c\u043e\u0440\u044f\u0445 "
        * 60,
        to=["b@x.org"],
    )
    cc = EmailMessage("S", "C", "from@example.com", ["c@x.org"], cc=["cc@x.org"])
    lazy = EmailMessage(
        from_email=gettext_lazy("tester@example.com"),
        to=[gettext_lazy("to1@example.com")],
        reply_to=[gettext_lazy("reply@example.com")],
    )
    assert connection().send_messages([html, long_line, cc, lazy]) == 4
    by_to = {got.message["To"]: got for got in received(smtp_server, 4)}
    first = by_to["a@x.org"].message
    assert first["From"] == "Firstname Sürname <from@example.com>"
    assert [p.get_content_type() for p in first.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    # Lines over 998 octets: encoded (quoted-printable or base64), intact.
    long_got = by_to["b@x.org"].message
    assert long_got["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert long_got.get_content() == long_line.body + "\n" or (
        long_got.get_content() == long_line.body
    )
    assert by_to["c@x.org"].message["Cc"] == "cc@x.org"
    assert by_to["c@x.org"].rcpt_tos == ("c@x.org", "cc@x.org")
    assert by_to["to1@example.com"].message["Reply-To"] == "reply@example.com"


@pytest.mark.usefixtures("pooled")
def test_international_domains_are_encoded_for_smtp(
    smtp_server: SMTPTestServer,
) -> None:
    email = EmailMessage(
        from_email="from@öäü.com", to=["to@öäü.com"], bcc=["bcc@öäü.com"]
    )
    assert connection().send_messages([email]) == 1
    [got] = received(smtp_server)
    assert got.rcpt_tos == ("to@xn--4ca9at.com", "bcc@xn--4ca9at.com")
    assert got.message["To"] == "to@xn--4ca9at.com"
    assert got.message["From"] == "from@xn--4ca9at.com"


@pytest.mark.usefixtures("pooled")
def test_invalid_addresses_are_refused_even_when_failing_silently() -> None:
    backend = EmailBackend(fail_silently=True)
    for address in (
        "to@other.com@example.com",
        "to@example.com, other@example.com",
        "@example.com",
        "django",  # no domain: Django's SMTP backend sends it, mailpool does not
        '"evil@example.com\r\nto"@example.com',
    ):
        with pytest.raises(ValueError, match="Invalid address"):
            backend.send_messages([EmailMessage(bcc=[address])])


# -- counting, envelopes, From --


def test_send_mail_counts_against_the_accounts_limit(
    pooled: None, smtp_server: SMTPTestServer, alice: EmailAccount
) -> None:
    assert mail.send_mail("Hi", "Body", None, ["to@example.com"]) == 1
    alice.refresh_from_db()
    assert alice.sent_today == 1
    assert alice.last_sent_at is not None
    [got] = received(smtp_server)
    # No From of its own (DEFAULT_FROM_EMAIL): the account's.
    assert got.message["From"] == "Alice Example <alice@example.com>"


def test_from_header_modes(
    pool_backend: BackendSettings, alice: EmailAccount, smtp_server: SMTPTestServer
) -> None:
    def sender(mode: str, from_email: str | None) -> str:
        backend = EmailBackend(from_header=mode)
        email = EmailMessage("S", "B", from_email, ["to@example.com"])
        assert backend.send_messages([email]) == 1
        return str(smtp_server.wait_for_messages(1)[-1].message["From"])

    account = "Alice Example <alice@example.com>"
    assert sender("default", "news@example.com") == "news@example.com"
    smtp_server.messages.clear()
    with override_settings(SERVER_EMAIL="errors@example.com"):
        assert sender("default", "errors@example.com") == account
    smtp_server.messages.clear()
    assert sender("account", "news@example.com") == account
    smtp_server.messages.clear()
    assert sender("message", None) == "webmaster@localhost"


@pytest.mark.usefixtures("pooled")
def test_the_envelope_is_the_messages_recipients(smtp_server: SMTPTestServer) -> None:
    email = EmailMessage(
        "S", "B", None, ["to@example.com"], cc=["cc@example.com"], bcc=["b@example.com"]
    )
    assert connection().send_messages([email]) == 1
    [got] = received(smtp_server)
    assert got.rcpt_tos == ("to@example.com", "cc@example.com", "b@example.com")
    assert got.message["Bcc"] is None
    assert b"b@example.com" not in got.raw


@pytest.mark.usefixtures("pooled")
def test_a_to_header_naming_others_than_the_recipients_is_refused() -> None:
    email = EmailMessage(
        "S", "B", None, ["one@example.com"], headers={"To": "list@example.com"}
    )
    with pytest.raises(ConfigurationError, match=r"list@example\.com"):
        connection().send_messages([email])


@pytest.mark.usefixtures("pooled")
def test_a_message_without_recipients_is_skipped(smtp_server: SMTPTestServer) -> None:
    assert connection().send_messages([EmailMessage("S", "B", None, [])]) == 0
    assert connection().send_messages([]) == 0
    assert smtp_server.connections == 0


@pytest.mark.usefixtures("pooled")
def test_the_result_of_each_send_is_on_the_message(alice: EmailAccount) -> None:
    email = EmailMessage("S", "B", None, ["to@example.com"])
    connection().send_messages([email])
    result = email.mailpool_result
    assert isinstance(result, SendResult)
    assert (result.account_id, result.account_email) == (alice.pk, alice.email)


# -- failures --


def test_failures_raise_unless_failing_silently(
    pool_backend: BackendSettings, smtp_server: SMTPTestServer, alice: EmailAccount
) -> None:
    smtp_server.reject_recipient("gone@example.com")
    bad = EmailMessage("S", "B", None, ["gone@example.com"])
    good = EmailMessage("S", "B", None, ["to@example.com"])
    with pytest.raises(MessageRejected):
        EmailBackend().send_messages([good, bad, good])
    assert len(received(smtp_server)) == 1  # sent until the failure
    assert EmailBackend(fail_silently=True).send_messages([good, bad, good]) == 2
    EmailAccount.objects.update(status="inactive")
    with pytest.raises(NoAccountAvailable):
        EmailBackend().send_messages([good])
    assert EmailBackend(fail_silently=True).send_messages([good]) == 0


# -- sessions --


@pytest.mark.usefixtures("pooled")
def test_sessions_stay_open_between_open_and_close(
    smtp_server: SMTPTestServer,
) -> None:
    emails = [EmailMessage("S", "B", None, [f"to{n}@example.com"]) for n in range(3)]
    with EmailBackend() as backend:
        assert backend.send_messages(emails[:2]) == 2
        assert backend.send_messages(emails[2:]) == 1
        assert smtp_server.connections == 1
    # Closed: each call opens (and closes) its own session.
    backend.send_messages(emails[:1])
    backend.send_messages(emails[:1])
    assert smtp_server.connections == 3
    assert "QUIT" in smtp_server.commands


# -- options --


def test_unknown_options_are_errors() -> None:
    with pytest.raises(TypeError, match=r"'bogus'"):
        EmailBackend(bogus=1)
    with pytest.raises(ImproperlyConfigured, match="own credentials"):
        EmailBackend(username="someone", password="secret")
    for bad in ({"failover": -1}, {"selector": "best"}, {"from_header": "x"}):
        with pytest.raises(ImproperlyConfigured):
            EmailBackend(**bad)


@pytest.mark.skipif(not MAILERS, reason="MAILERS is new in Django 6.1")
def test_a_mailers_entry_with_an_unknown_option_is_invalid() -> None:
    from django.core.mail import InvalidMailer

    entry = {"BACKEND": BACKEND, "OPTIONS": {"owner": "acme", "bogus": 1}}
    with (
        override_settings(MAILERS={"default": entry}),
        pytest.raises(InvalidMailer, match=r"'bogus'"),
    ):
        mail.mailers.default  # noqa: B018  # type: ignore[attr-defined]
    entry = {"BACKEND": BACKEND, "OPTIONS": {"owner": "acme"}}
    with override_settings(MAILERS={"default": entry}):
        backend: EmailBackend = mail.mailers.default
        assert isinstance(backend, EmailBackend)
        assert (backend.alias, backend.owner) == ("default", "acme")


def test_options_choose_the_accounts(
    pool_backend: BackendSettings, add_row: RowFactory, smtp_server: SMTPTestServer
) -> None:
    add_row("a@acme.example", owner="acme", tags={"spring"})
    add_row("b@acme.example", owner="acme")
    add_row("c@globex.example", owner="globex", tags={"spring"})
    email = EmailMessage("S", "B", None, ["to@example.com"])
    with pool_backend(owner="acme", tag="spring"):
        for _ in range(3):
            assert connection().send_messages([email]) == 1
    assert {got.mail_from for got in received(smtp_server, 3)} == {"a@acme.example"}


def test_a_message_chooses_its_own_scope(
    pooled: None, add_row: RowFactory, smtp_server: SMTPTestServer
) -> None:
    acme = add_row("a@acme.example", owner="acme")
    globex = add_row("b@globex.example", owner="globex", tags={"spring"})
    senders: list[str] = []
    for attribute, value in (
        ("mailpool_owner", "acme"),
        ("mailpool_tag", "spring"),
        ("mailpool_account_ids", [globex]),
        ("mailpool_account_ids", EmailAccount.objects.filter(pk=acme.pk)),
    ):
        email = EmailMessage("S", "B", None, ["to@example.com"])
        setattr(email, attribute, value)
        assert connection().send_messages([email]) == 1
        senders.append(smtp_server.wait_for_messages(len(senders) + 1)[-1].mail_from)
    assert senders == [acme.email, globex.email, globex.email, acme.email]


def test_round_robin_takes_turns(
    pool_backend: BackendSettings, add_row: RowFactory, smtp_server: SMTPTestServer
) -> None:
    rows = [add_row(f"s{n}@example.com") for n in range(3)]
    with pool_backend(selector="round_robin"), connection() as backend:
        for n in range(6):
            email = EmailMessage("S", "B", None, [f"to{n}@example.com"])
            assert backend.send_messages([email]) == 1
    senders = [got.mail_from for got in received(smtp_server, 6)]
    assert sorted(senders) == sorted(row.email for row in rows for _ in range(2))
    assert senders[:3] == senders[3:]


def test_wait_lets_a_send_wait_for_the_minimum_wait(
    pool_backend: BackendSettings, add_row: RowFactory, smtp_server: SMTPTestServer
) -> None:
    add_row("slow@example.com", min_wait_time=0.3)
    emails = [EmailMessage("S", "B", None, [f"to{n}@example.com"]) for n in range(2)]
    with pytest.raises(NoAccountAvailable):
        EmailBackend().send_messages(emails)
    smtp_server.messages.clear()
    assert EmailBackend(wait=10).send_messages(emails) == 2


def test_a_storage_url_option(
    tmp_path: Path, smtp_server: SMTPTestServer, pool_backend: BackendSettings
) -> None:
    url = f"json://{tmp_path / 'accounts.json'}"
    storage = open_storage(url)
    storage.add(
        Account(
            email="json@example.com",
            min_wait_time=0,
            smtp=SMTPSettings(
                host=smtp_server.host, port=smtp_server.port, use_tls=False
            ),
        )
    )
    storage.close()
    with pool_backend(storage=url):
        assert mail.send_mail("S", "B", None, ["to@example.com"]) == 1
    assert received(smtp_server)[0].mail_from == "json@example.com"


# -- Django's own mails go through the pool --


@pytest.mark.usefixtures("pooled")
def test_password_reset_mail_goes_through_the_pool(
    smtp_server: SMTPTestServer,
) -> None:
    User.objects.create_user("reader", "reader@example.net", "pw")
    form = PasswordResetForm({"email": "reader@example.net"})
    assert form.is_valid()
    form.save(domain_override="testserver")
    [got] = received(smtp_server)
    assert got.rcpt_tos == ("reader@example.net",)
    assert got.mail_from == "alice@example.com"
    assert "testserver" in got.message.get_content()


@pytest.mark.usefixtures("pooled")
@override_settings(ADMINS=ADMINS, MANAGERS=MANAGERS)
def test_mail_admins_and_managers_go_through_the_pool(
    smtp_server: SMTPTestServer,
) -> None:
    mail.mail_admins("Broken", "Trace", html_message="<p>Trace</p>")
    mail.mail_managers("Note", "Text")
    got = received(smtp_server, 2)
    assert [g.rcpt_tos for g in got] == [("admin@example.com",), ("boss@example.com",)]
    assert got[0].message["Subject"] == "[Django] Broken"
