"""The admin, through Django's test client: the list, filters and search, the
actions, and secrets that are write-only and never in the change history."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from djangotools import RowFactory

from mailpool.contrib.django.models import EmailAccount
from mailpool.contrib.django.storage import DjangoStorage
from smtpserver import USERS, SMTPTestServer

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:mailpool_emailaccount_changelist"
SECRETS = ("smtp_password", "oauth2_access_token", "oauth2_refresh_token")


@pytest.fixture
def admin_client(client: Client) -> Client:
    User.objects.create_superuser("root", "root@example.com", "pw")
    client.login(username="root", password="pw")
    return client


def change_url(row: EmailAccount) -> str:
    return str(reverse("admin:mailpool_emailaccount_change", args=[row.pk]))


def form_data(row: EmailAccount, **changes: Any) -> dict[str, Any]:
    """The change form's fields as the browser would post them back."""
    data: dict[str, Any] = {
        "email": row.email,
        "sender_name": row.sender_name,
        "owner": row.owner or "",
        "tags": ", ".join(row.tags),
        "status": row.status,
        "status_reason": row.status_reason or "",
        "daily_limit": row.daily_limit,
        "min_wait_time": row.min_wait_time,
        "max_in_flight": row.max_in_flight,
        "timezone": row.timezone,
        "connection_type": row.connection_type,
        "smtp_host": row.smtp_host,
        "smtp_port": row.smtp_port,
        "smtp_username": row.smtp_username or "",
        "oauth2_client_id": "",
        "oauth2_token_url": "",
        "oauth2_scope": "",
    }
    for flag in ("smtp_use_tls", "smtp_use_ssl", "smtp_allow_insecure_auth"):
        if getattr(row, flag):
            data[flag] = "on"
    data.update(changes)
    return data


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_the_list_shows_usage_and_errors(
    admin_client: Client, add_row: RowFactory
) -> None:
    add_row("alice@example.com", owner="acme", daily_limit=30)
    add_row("bob@example.com", status="error", status_reason="535 login refused")
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "alice@example.com" in page and "bob@example.com" in page
    assert "0 / 30" in page
    assert "535 login refused" in page


def test_filters_and_search(admin_client: Client, add_row: RowFactory) -> None:
    add_row("alice@example.com", owner="acme", tags={"spring"})
    add_row("bob@example.com", owner="globex", status="inactive")
    url = reverse(CHANGELIST)

    def listed(**query: str) -> set[str]:
        page = admin_client.get(url, query).content.decode()
        return {e for e in ("alice@example.com", "bob@example.com") if e in page}

    assert listed(status="inactive") == {"bob@example.com"}
    assert listed(owner="acme") == {"alice@example.com"}
    assert listed(tag_set__tag="spring") == {"alice@example.com"}
    assert listed(q="globex") == {"bob@example.com"}
    assert listed(q="spring") == {"alice@example.com"}


def test_adding_an_account(admin_client: Client, smtp_server: SMTPTestServer) -> None:
    response = admin_client.post(
        reverse("admin:mailpool_emailaccount_add"),
        {
            "email": "New@Example.com",
            "sender_name": "New",
            "tags": "spring, vip",
            "status": "active",
            "daily_limit": 50,
            "min_wait_time": 1,
            "max_in_flight": 1,
            "timezone": "Europe/Paris",
            "connection_type": "imap/smtp",
            "smtp_host": smtp_server.host,
            "smtp_port": smtp_server.port,
            "smtp_allow_insecure_auth": "on",
            "smtp_password": "typed-secret",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    account = DjangoStorage().get_by_email("new@example.com")
    assert account.tags == {"spring", "vip"}
    assert account.timezone == "Europe/Paris"
    assert account.smtp.password is not None
    assert account.smtp.password.get_secret_value() == "typed-secret"


def test_invalid_settings_are_shown_on_their_fields(
    admin_client: Client, add_row: RowFactory
) -> None:
    row = add_row("alice@example.com")
    for changes, problem in (
        ({"smtp_use_tls": "on", "smtp_use_ssl": "on"}, "exclude each other"),
        ({"timezone": "Mars/Base"}, "unknown time zone"),
        ({"smtp_password": "pw", "smtp_allow_insecure_auth": ""}, "unencrypted"),
    ):
        data = {k: v for k, v in form_data(row, **changes).items() if v != ""}
        response = admin_client.post(change_url(row), data)
        assert response.status_code == 200, changes
        assert problem in response.content.decode(), changes
    assert DjangoStorage().get(row.pk).timezone == "UTC"


def test_secrets_are_write_only_and_never_in_the_history(
    admin_client: Client, add_row: RowFactory
) -> None:
    row = add_row("alice@example.com", password="old-secret")
    page = admin_client.get(change_url(row)).content.decode()
    assert "old-secret" not in page
    assert "Stored: type a new value" in page

    # Saving without typing a secret keeps the stored one.
    response = admin_client.post(change_url(row), form_data(row, sender_name="A"))
    assert response.status_code == 302
    stored = DjangoStorage().get(row.pk)
    assert stored.sender_name == "A"
    assert stored.smtp.password is not None
    assert stored.smtp.password.get_secret_value() == "old-secret"

    # A typed one replaces it; the history says so, without the value.
    admin_client.post(change_url(row), form_data(row, smtp_password="new-secret"))
    stored = DjangoStorage().get(row.pk)
    assert stored.smtp.password is not None
    assert stored.smtp.password.get_secret_value() == "new-secret"
    history = admin_client.get(
        reverse("admin:mailpool_emailaccount_history", args=[row.pk])
    ).content.decode()
    assert "SMTP password" in history
    entries = " ".join(e.change_message for e in LogEntry.objects.all())
    for secret in ("old-secret", "new-secret"):
        assert secret not in history and secret not in entries
    page = admin_client.get(change_url(row)).content.decode()
    assert "new-secret" not in page

    # The box removes it.
    admin_client.post(change_url(row), form_data(row, clear_smtp_password="on"))
    assert DjangoStorage().get(row.pk).smtp.password is None


def test_saving_in_the_admin_keeps_the_counts(
    admin_client: Client, add_row: RowFactory
) -> None:
    row = add_row("alice@example.com")
    page = admin_client.get(change_url(row))  # the form is read now...
    assert page.status_code == 200
    EmailAccount.objects.filter(pk=row.pk).update(sent_count=7, count_day=row.count_day)
    admin_client.post(change_url(row), form_data(row, daily_limit=40))  # ...saved now
    row.refresh_from_db()
    assert (row.daily_limit, row.sent_count) == (40, 7)


def test_actions(
    admin_client: Client, add_row: RowFactory, smtp_server: SMTPTestServer
) -> None:
    good = add_row(
        "alice@example.com",
        username="alice@example.com",
        password=USERS["alice@example.com"],
    )
    bad = add_row("bob@example.com", username="bob@example.com", password="wrong")
    url = reverse(CHANGELIST)

    def act(action: str, *rows: EmailAccount) -> list[str]:
        response = admin_client.post(
            url,
            {"action": action, "_selected_action": [r.pk for r in rows]},
            follow=True,
        )
        assert response.status_code == 200
        return messages_of(response)

    shown = act("test_connection", good, bad)
    assert len(shown) == 2
    assert shown[0].startswith("alice@example.com: Connected to")
    assert shown[1].startswith("bob@example.com: ") and "refused" in shown[1]
    # Only reports: the failing account keeps its status.
    bad.refresh_from_db()
    assert bad.status == "active"

    assert act("deactivate", good, bad) == ["2 accounts deactivated."]
    assert set(EmailAccount.objects.values_list("status", flat=True)) == {"inactive"}
    EmailAccount.objects.filter(pk=bad.pk).update(status_reason="old error")
    assert act("activate", bad) == ["1 account activated."]
    bad.refresh_from_db()
    assert (bad.status, bad.status_reason) == ("active", None)

    EmailAccount.objects.update(sent_count=3)
    assert act("reset_todays_count", good)[0].startswith("Reset today's count of 1")
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.sent_count, bad.sent_count) == (0, 3)
    assert LogEntry.objects.filter(object_id=good.pk).count() == 2


def test_a_user_who_may_only_view_sees_no_actions(
    client: Client, add_row: RowFactory
) -> None:
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_emailaccount"))
    client.login(username="viewer", password="pw")
    row = add_row("alice@example.com", password="s3cr3t-value")
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "alice@example.com" in page
    assert not re.search(r'value="(test_connection|activate|deactivate)"', page)
    detail = client.get(change_url(row))
    assert detail.status_code == 200
    assert "s3cr3t-value" not in detail.content.decode()
