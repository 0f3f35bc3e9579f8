"""URLs of the test project: the admin and the app's endpoint."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("mailpool.contrib.django.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
]
