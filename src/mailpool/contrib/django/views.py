"""The HTTP endpoint: test one account's connection.

``POST email-accounts/<id>/test-connection/`` answers
``{"success": ..., "message": ..., "account_email": ...}`` (status 200 whether
the test passed or not). Only an authenticated user with the permission to
change that account may call it: 403 otherwise, without telling whether the
account exists; 404 only to users who may change accounts. A user logged in
by a session must send Django's CSRF token; GET and other methods get 405.
"""

from __future__ import annotations

from django.contrib.auth import SESSION_KEY
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from mailpool.contrib.django.connectivity import check_accounts
from mailpool.contrib.django.models import EmailAccount

__all__ = ["test_connection"]

PERMISSION = "mailpool.change_emailaccount"


def _answer(
    status: int, message: str, *, success: bool = False, email: str | None = None
) -> JsonResponse:
    body = {"success": success, "message": message, "account_email": email}
    return JsonResponse(body, status=status)


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    """Django's CSRF check, for users authenticated by their session (the
    only ones a third-party page can make a browser send as)."""
    if SESSION_KEY not in getattr(request, "session", {}):
        return None

    def never_called(request: HttpRequest) -> HttpResponse:  # pragma: no cover
        raise AssertionError("the CSRF check only inspects the request")

    check = CsrfViewMiddleware(never_called)
    check.process_request(request)
    response: HttpResponse | None = check.process_view(request, None, (), {})
    return response


@csrf_exempt  # checked below, for session authentication
@require_POST
def test_connection(request: HttpRequest, account_id: str) -> HttpResponse:
    """Connect and log in with one account, without sending."""
    user = request.user
    if not user.is_authenticated:
        return _answer(403, "Log in to test email accounts.")
    if _csrf_failure(request) is not None:
        return _answer(
            403,
            "CSRF verification failed: send the csrftoken cookie's value in the "
            "X-CSRFToken header.",
        )
    may_change_all = user.has_perm(PERMISSION)
    account = EmailAccount.objects.filter(pk=account_id).first()
    if account is None:
        if may_change_all:
            return _answer(404, "There is no such email account.")
        return _answer(403, "You may not test this email account.")
    if not (may_change_all or user.has_perm(PERMISSION, account)):
        return _answer(403, "You may not test this email account.")
    result = check_accounts([account])[0]
    return _answer(
        200, result.message, success=result.success, email=result.account_email
    )
