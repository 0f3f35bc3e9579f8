"""URLs of the app: ``path("api/", include("mailpool.contrib.django.urls"))``.

=================================================  ===========================
``POST email-accounts/<id>/test-connection/``      ``mailpool:test-connection``
=================================================  ===========================
"""

from __future__ import annotations

from django.urls import path

from mailpool.contrib.django import views

app_name = "mailpool"

urlpatterns = [
    path(
        "email-accounts/<str:account_id>/test-connection/",
        views.test_connection,
        name="test-connection",
    ),
]
