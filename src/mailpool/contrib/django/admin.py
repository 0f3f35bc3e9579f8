"""The admin of the sender accounts.

Secrets (the SMTP password and the OAuth2 tokens) are write-only: the form
never shows them back, an empty field keeps the stored one, and the change
history records that a secret changed, never its value. Saving an account
never touches its usage counters (see :meth:`EmailAccount.save`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from mailpool.contrib.django.connectivity import check_accounts
from mailpool.contrib.django.models import MAX_NAME, EmailAccount, choices
from mailpool.models import USAGE_FIELDS, AccountStatus
from mailpool.providers import ConnectionType

__all__ = ["EmailAccountAdmin", "EmailAccountForm"]

SECRETS = (
    "smtp_password",
    "oauth2_access_token",
    "oauth2_refresh_token",
    "oauth2_client_secret",
)
"""The write-only fields."""


def _secret(label: str) -> forms.CharField:
    """A write-only field for a secret: never rendered back, kept as typed."""
    return forms.CharField(
        label=label,
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )


def _clear(label: str) -> forms.BooleanField:
    """The box that removes a stored secret (an empty secret field keeps it)."""
    return forms.BooleanField(label=label, required=False)


class EmailAccountForm(forms.ModelForm):
    """The account form: tags as text, secrets write-only."""

    status = forms.ChoiceField(choices=choices(AccountStatus))
    connection_type = forms.ChoiceField(choices=choices(ConnectionType))
    tags = forms.CharField(
        required=False,
        help_text="Comma-separated, e.g. the campaigns this account sends for.",
    )
    smtp_password = _secret("SMTP password")
    clear_smtp_password = _clear("Remove the stored SMTP password")
    oauth2_access_token = _secret("OAuth2 access token")
    clear_oauth2_access_token = _clear("Remove the stored access token")
    oauth2_refresh_token = _secret("OAuth2 refresh token")
    clear_oauth2_refresh_token = _clear("Remove the stored refresh token")
    oauth2_client_secret = _secret("OAuth2 client secret")
    clear_oauth2_client_secret = _clear("Remove the stored client secret")

    class Meta:
        model = EmailAccount
        fields = "__all__"
        widgets: ClassVar[dict[str, Any]] = {
            "status_reason": forms.Textarea(attrs={"rows": 2}),
            "smtp_username": forms.TextInput(),
            "oauth2_client_id": forms.TextInput(),
            "oauth2_token_url": forms.TextInput(),
            "oauth2_scope": forms.TextInput(),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = self.instance
        if not instance._state.adding:
            self.initial["tags"] = ", ".join(instance.tags)
        for name in SECRETS:
            # Never sent to the browser, not even as an initial value.
            self.initial[name] = ""
            stored = bool(getattr(instance, name, None))
            field = self.fields.get(name)
            if field is not None:
                field.help_text = (
                    "Stored: type a new value to replace it, or leave this empty "
                    "to keep it."
                    if stored
                    else "None stored."
                )

    def _secret(self, name: str) -> str | None:
        """The value to store: a new one typed, none (cleared), or the stored
        one."""
        typed = self.cleaned_data.get(name) or ""
        if typed:
            return str(typed)
        if self.cleaned_data.get(f"clear_{name}"):
            return None
        stored = getattr(self.instance, name, None)
        return None if self.instance._state.adding else stored

    def clean_tags(self) -> list[str]:
        text = self.cleaned_data.get("tags") or ""
        tags = sorted({tag.strip() for tag in text.split(",") if tag.strip()})
        for tag in tags:
            if len(tag) > MAX_NAME:
                raise forms.ValidationError(
                    f"A tag has {MAX_NAME} characters at most: {tag[:40]}..."
                )
        return tags

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or self.cleaned_data
        for name in SECRETS:
            cleaned[name] = self._secret(name)
        return cleaned


@admin.register(EmailAccount)
class EmailAccountAdmin(admin.ModelAdmin):
    """Accounts: list, filters, search, connection tests and bulk changes."""

    form = EmailAccountForm
    list_display = (
        "email",
        "owner",
        "status",
        "sent_today_of_limit",
        "last_sent_at",
        "last_error_shown",
    )
    list_filter = ("status", "connection_type", "owner", "tag_set__tag")
    search_fields = (
        "email",
        "sender_name",
        "owner",
        "smtp_host",
        "smtp_username",
        "tag_set__tag",
    )
    ordering = ("email_key",)
    actions = (
        "test_connection",
        "activate",
        "deactivate",
        "reset_todays_count",
    )
    readonly_fields = (
        "id",
        "sent_today_of_limit",  # in place of sent_count
        *(name for name in USAGE_FIELDS if name != "sent_count"),
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "email",
                    "sender_name",
                    "owner",
                    "tags",
                    "status",
                    "status_reason",
                )
            },
        ),
        (
            "Limits",
            {"fields": ("daily_limit", "min_wait_time", "max_in_flight", "timezone")},
        ),
        (
            "SMTP",
            {
                "fields": (
                    "connection_type",
                    "smtp_host",
                    "smtp_port",
                    "smtp_use_tls",
                    "smtp_use_ssl",
                    "smtp_username",
                    "smtp_password",
                    "clear_smtp_password",
                    "smtp_allow_insecure_auth",
                )
            },
        ),
        (
            "OAuth2",
            {
                "classes": ("collapse",),
                "fields": (
                    "oauth2_enabled",
                    "oauth2_access_token",
                    "clear_oauth2_access_token",
                    "oauth2_refresh_token",
                    "clear_oauth2_refresh_token",
                    "oauth2_token_expiry",
                    "oauth2_client_id",
                    "oauth2_client_secret",
                    "clear_oauth2_client_secret",
                    "oauth2_token_url",
                    "oauth2_scope",
                ),
            },
        ),
        (
            "Usage",
            {
                "fields": (
                    "sent_today_of_limit",
                    "count_day",
                    "last_sent_at",
                    "in_flight",
                    "lease_until",
                    "paused_until",
                    "pause_kind",
                    "consecutive_failures",
                    "last_error",
                    "last_error_at",
                )
            },
        ),
    )

    @method_decorator(sensitive_post_parameters(*SECRETS))
    def changeform_view(self, *args: Any, **kwargs: Any) -> Any:
        return super().changeform_view(*args, **kwargs)

    def get_fieldsets(
        self, request: HttpRequest, obj: EmailAccount | None = None
    ) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        # Read-only: never show a secret, not even to display it read-only.
        hidden = {*SECRETS, *(f"clear_{name}" for name in SECRETS)}
        return [
            (
                name,
                {
                    **options,
                    "fields": [f for f in options["fields"] if f not in hidden],
                },
            )
            for name, options in fieldsets
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[EmailAccount]:
        return super().get_queryset(request).prefetch_related("tag_set")

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        form.instance.set_tags(form.cleaned_data.get("tags") or [])

    # -- columns ----------------------------------------------------------------

    @admin.display(description="sent today / limit")
    def sent_today_of_limit(self, account: EmailAccount) -> str:
        return f"{account.sent_today} / {account.daily_limit}"

    @admin.display(description="last error", ordering="last_error_at")
    def last_error_shown(self, account: EmailAccount) -> str:
        if account.last_error:
            return str(account.last_error)
        if account.status == AccountStatus.ERROR.value:
            return str(account.status_reason or "")
        return ""

    # -- actions ----------------------------------------------------------------

    @admin.action(description="Test the connection", permissions=["change"])
    def test_connection(
        self, request: HttpRequest, queryset: QuerySet[EmailAccount]
    ) -> None:
        for result in check_accounts(queryset.order_by("email_key")):
            level = messages.SUCCESS if result.success else messages.ERROR
            self.message_user(
                request, f"{result.account_email}: {result.message}", level
            )

    @admin.action(description="Activate", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[EmailAccount]) -> None:
        self._set_status(request, queryset, AccountStatus.ACTIVE, "activated")

    @admin.action(description="Deactivate", permissions=["change"])
    def deactivate(
        self, request: HttpRequest, queryset: QuerySet[EmailAccount]
    ) -> None:
        self._set_status(request, queryset, AccountStatus.INACTIVE, "deactivated")

    @admin.action(description="Reset today's count", permissions=["change"])
    def reset_todays_count(
        self, request: HttpRequest, queryset: QuerySet[EmailAccount]
    ) -> None:
        accounts = list(queryset)
        reset = queryset.filter(sent_count__gt=0).update(sent_count=0)
        for account in accounts:
            self.log_change(request, account, "Reset today's count.")
        self.message_user(
            request,
            f"Reset today's count of {_accounts(reset)} (counts also start "
            "again by themselves every day).",
            messages.SUCCESS,
        )

    def _set_status(
        self,
        request: HttpRequest,
        queryset: QuerySet[EmailAccount],
        status: AccountStatus,
        done: str,
    ) -> None:
        accounts = list(queryset)
        changes: dict[str, Any] = {"status": status.value, "status_reason": None}
        if status is AccountStatus.ACTIVE:
            changes["consecutive_failures"] = 0  # a fresh start
        changed = queryset.update(**changes)
        for account in accounts:
            self.log_change(request, account, f"Set the status to {status.value}.")
        self.message_user(
            request, f"{_accounts(changed).capitalize()} {done}.", messages.SUCCESS
        )


def _accounts(count: int) -> str:
    return f"{count} account" if count == 1 else f"{count} accounts"
