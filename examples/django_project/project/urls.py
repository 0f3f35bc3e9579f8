"""URLs of the example project: the admin and mailpool's endpoint."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("mailpool.contrib.django.urls")),
]
