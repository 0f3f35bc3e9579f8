"""The connection-test endpoint through Django's test client: who may call
it, CSRF for session logins, the answer's shape."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from djangotools import RowFactory

from mailpool.contrib.django.models import EmailAccount
from smtpserver import USERS, SMTPTestServer

pytestmark = pytest.mark.django_db


def url(account_id: str) -> str:
    return str(reverse("mailpool:test-connection", args=[account_id]))


@pytest.fixture
def alice(add_row: RowFactory) -> EmailAccount:
    return add_row(
        "alice@example.com",
        username="alice@example.com",
        password=USERS["alice@example.com"],
    )


def user(*permissions: str) -> User:
    account = User.objects.create_user(f"user{User.objects.count()}", password="pw")
    for codename in permissions:
        account.user_permissions.add(Permission.objects.get(codename=codename))
    return account


def test_a_permitted_user_gets_the_result(
    client: Client, alice: EmailAccount, smtp_server: SMTPTestServer
) -> None:
    client.force_login(user("change_emailaccount"))
    response = client.post(url(alice.pk))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "message", "account_email"}
    assert body["success"] is True
    assert body["account_email"] == "alice@example.com"
    assert body["message"].startswith("Connected to")


def test_a_failing_account_is_a_result_too(client: Client, add_row: RowFactory) -> None:
    bad = add_row("bob@example.com", username="bob@example.com", password="wrong")
    client.force_login(user("change_emailaccount"))
    body = client.post(url(bad.pk)).json()
    assert body["success"] is False
    assert "refused" in body["message"] and "wrong" not in body["message"]
    bad.refresh_from_db()
    assert bad.status == "active"


def test_who_may_not_call_it(client: Client, alice: EmailAccount) -> None:
    anonymous = client.post(url(alice.pk))
    assert anonymous.status_code in (401, 403)
    client.force_login(user("view_emailaccount"))
    for account_id in (alice.pk, "no-such-account"):
        refused = client.post(url(account_id))
        assert refused.status_code == 403
        # The same answer whether the account exists or not.
        assert refused.json() == {
            "success": False,
            "message": "You may not test this email account.",
            "account_email": None,
        }
    client.force_login(user("change_emailaccount"))
    assert client.post(url("no-such-account")).status_code == 404


def test_get_is_not_allowed(client: Client, alice: EmailAccount) -> None:
    client.force_login(user("change_emailaccount"))
    assert client.get(url(alice.pk)).status_code == 405


def test_session_logins_need_the_csrf_token(alice: EmailAccount) -> None:
    client = Client(enforce_csrf_checks=True)
    User.objects.create_superuser("root", "root@example.com", "pw")
    assert client.login(username="root", password="pw")
    refused = client.post(url(alice.pk))
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["message"]
    client.get(reverse("admin:index"))  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    allowed = client.post(url(alice.pk), HTTP_X_CSRFTOKEN=token)
    assert allowed.status_code == 200
