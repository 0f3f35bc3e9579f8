"""Account and settings validation: every bad input is a clear ConfigurationError."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import SecretStr

from mailpool import (
    PROVIDERS,
    Account,
    AccountStatus,
    ConfigurationError,
    ConnectionType,
    MailpoolError,
    OAuth2Credentials,
    SMTPSettings,
)

RELAY = {"host": "127.0.0.1", "port": 2525, "use_tls": False}


def account(**fields: Any) -> Account:
    fields.setdefault("email", "alice@example.com")
    fields.setdefault("smtp", RELAY)
    return Account(**fields)


def test_defaults_follow_the_design() -> None:
    created = account()
    assert created.daily_limit == 30
    assert created.min_wait_time == 1.0
    assert created.status is AccountStatus.ACTIVE
    assert created.connection_type is ConnectionType.SMTP
    assert created.id and created.id != account().id


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@b@example.com"}, "email"),
        ({"email": "alice@exa mple.com"}, "email"),
        ({"email": "alice@-example.com"}, "email"),
        ({"smtp": {**RELAY, "port": 0}}, "smtp.port"),
        ({"smtp": {**RELAY, "port": 65536}}, "smtp.port"),
        (
            {"smtp": {"host": "h", "use_tls": True, "use_ssl": True}},
            "exclude each other",
        ),
        ({"daily_limit": -1}, "daily_limit"),
        ({"min_wait_time": -0.5}, "min_wait_time"),
        ({"min_wait_time": float("inf")}, "min_wait_time"),
        ({"sender_name": "Alice\r\nBcc: victim@example.org"}, "line breaks"),
        ({"sender_name": "Alice\nX: y"}, "line breaks"),
        ({"sender_name": "Alice\rBcc: x@example.org"}, "line breaks"),
        ({"smtp": {**RELAY, "username": "alice\r\nX: y"}}, "smtp.username"),
        ({"email": "a" * 250 + "@example.com"}, "longer than 254"),
        ({"smtp": {"host": "bad host"}}, "smtp.host"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_input_raises_configuration_error_naming_the_field(
    fields: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected) as caught:
        account(**fields)
    assert isinstance(caught.value, MailpoolError)
    assert isinstance(caught.value, ValueError)


def test_password_over_plaintext_needs_an_explicit_opt_in() -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_auth"):
        SMTPSettings(host="relay", use_tls=False, password="pw")
    allowed = SMTPSettings(
        host="relay", use_tls=False, password="pw", allow_insecure_auth=True
    )
    assert allowed.password is not None


@pytest.mark.parametrize("token", ["access_token", "refresh_token"])
def test_token_over_plaintext_needs_an_explicit_opt_in(token: str) -> None:
    with pytest.raises(ConfigurationError, match="OAuth2 token"):
        account(oauth2=OAuth2Credentials(**{token: "tok"}))


def test_credentials_are_optional_for_a_local_relay() -> None:
    relay = account()
    assert relay.smtp.username is None and relay.smtp.password is None


def test_validation_errors_never_show_secret_input() -> None:
    with pytest.raises(ConfigurationError) as caught:
        SMTPSettings(host="h", port=99999, use_tls=False, password="hunter2-secret")
    chain = [caught.value, caught.value.__cause__]
    assert all("hunter2-secret" not in f"{error} {error!r}" for error in chain)


def test_secrets_are_hidden_from_repr_and_str() -> None:
    secret = account(
        smtp=SMTPSettings(host="h", username="alice", password="hunter2-secret"),
        oauth2=OAuth2Credentials(access_token="ya29.tok", refresh_token="1//ref"),
    )
    for text in (repr(secret), str(secret), repr(secret.smtp), str(secret.oauth2)):
        assert "hunter2-secret" not in text
        assert "ya29.tok" not in text and "1//ref" not in text
    assert secret.smtp.password == SecretStr("hunter2-secret")


def test_accounts_are_immutable_and_replace_validates() -> None:
    original = account()
    with pytest.raises(ValueError):
        original.daily_limit = 5  # type: ignore[misc]
    changed = original.replace(daily_limit=5, tags={"spring"})
    assert (changed.daily_limit, changed.tags, changed.id) == (
        5,
        frozenset({"spring"}),
        original.id,
    )
    with pytest.raises(ConfigurationError, match="daily_limit"):
        original.replace(daily_limit=-1)


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_for_provider_uses_the_preset(name: str) -> None:
    preset = PROVIDERS[name]
    built = Account.for_provider(name, email="me@example.com", password="app-pw")
    assert (built.smtp.host, built.smtp.port) == (preset.host, preset.port)
    assert (built.smtp.use_tls, built.smtp.use_ssl) == (preset.use_tls, preset.use_ssl)
    assert built.smtp.username == "me@example.com"
    assert built.connection_type is preset.connection_type


def test_presets_cover_the_common_providers() -> None:
    assert {"gmail", "outlook", "yahoo", "zoho"} <= set(PROVIDERS)
    assert PROVIDERS["gmail"].host == "smtp.gmail.com"


def test_for_provider_rejects_an_unknown_provider() -> None:
    with pytest.raises(ConfigurationError, match="gmail, outlook, yahoo, zoho"):
        Account.for_provider("hotmale", email="me@example.com")


def test_provider_connection_type_brings_its_server() -> None:
    gmail = Account(  # type: ignore[call-arg]  # smtp comes from the preset
        email="me@gmail.com",
        connection_type="gmail",
        oauth2=OAuth2Credentials(access_token="tok"),
    )
    assert gmail.smtp.host == "smtp.gmail.com"
    with pytest.raises(ConfigurationError, match="smtp"):
        Account(email="me@example.com")  # type: ignore[call-arg]


def test_daily_count_reads_zero_on_another_day() -> None:
    today = date(2026, 3, 1)
    used = account(sent_count=7, count_day=today, daily_limit=10)
    assert used.sent_on(today) == 7 and used.remaining_on(today) == 3
    tomorrow = today + timedelta(days=1)
    assert used.sent_on(tomorrow) == 0 and used.remaining_on(tomorrow) == 10
    assert used.as_of(tomorrow).sent_count == 0


def test_eligibility_checks_status_limit_and_wait() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    fresh = account(min_wait_time=60)
    assert fresh.is_eligible(now)
    assert not fresh.replace(status=AccountStatus.PENDING).is_eligible(now)
    full = fresh.replace(sent_count=30, count_day=now.date())
    assert not full.is_eligible(now)
    claimed = fresh.with_claim(now, now + timedelta(seconds=300))
    assert (claimed.sent_count, claimed.in_flight) == (1, 1)
    assert not claimed.is_eligible(now)  # its one send slot is taken
    assert claimed.busy_left(now) == pytest.approx(300)
    # The wait counts from the delivery, not from the claim.
    delivered = now + timedelta(seconds=5)
    waiting = claimed.with_lease_ended(
        now + timedelta(seconds=300), delivered, delivered=True, day=now.date()
    )
    assert (waiting.sent_count, waiting.in_flight) == (1, 0)
    assert waiting.last_sent_at == delivered
    assert waiting.wait_left(delivered + timedelta(seconds=20)) == pytest.approx(40)
    assert not waiting.is_eligible(delivered + timedelta(seconds=59))
    assert waiting.is_eligible(delivered + timedelta(seconds=60))


def test_more_slots_allow_sends_in_flight_at_once() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    until = now + timedelta(seconds=300)
    two = account(min_wait_time=0, max_in_flight=2).with_claim(now, until)
    assert two.is_eligible(now)
    both = two.with_claim(now, until)
    assert not both.is_eligible(now)
    assert both.with_lease_ended(
        until, now, delivered=True, day=now.date()
    ).is_eligible(now)


def test_an_abandoned_lease_expires_and_its_unit_stays_counted() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    until = now + timedelta(seconds=300)
    busy = account(min_wait_time=0).with_claim(now, until)
    assert not busy.is_eligible(until - timedelta(seconds=1))
    assert busy.is_eligible(until)
    again = busy.with_claim(until, until + timedelta(seconds=300))
    assert (again.sent_count, again.in_flight) == (2, 1)
    # The first worker ends its expired lease late: the new slot stays taken.
    late = again.with_lease_ended(until, until, delivered=True, day=now.date())
    assert late.in_flight == 1


def test_a_released_lease_gives_its_unit_back() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    until = now + timedelta(seconds=300)
    claimed = account().with_claim(now, until)
    released = claimed.with_lease_ended(until, now, delivered=False, day=now.date())
    assert (released.sent_count, released.in_flight) == (0, 0)
    assert released.last_sent_at is None
    # A release after the count rolled over to another day changes no count.
    rolled = claimed.as_of(now.date() + timedelta(days=1))
    assert (
        rolled.with_lease_ended(until, now, delivered=False, day=now.date()).sent_count
        == 0
    )


def test_max_in_flight_must_be_at_least_one() -> None:
    with pytest.raises(ConfigurationError, match="max_in_flight"):
        account(max_in_flight=0)


def test_naive_datetimes_are_taken_as_utc() -> None:
    stamped = account(last_sent_at=datetime(2026, 3, 1, 12))
    assert stamped.last_sent_at == datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="time zone"):
        account(timezone="Mars/Olympus")


def test_each_account_counts_on_its_own_day() -> None:
    # 23:30 UTC on 1 March is already 2 March in Tokyo.
    now = datetime(2026, 3, 1, 23, 30, tzinfo=timezone.utc)
    until = now + timedelta(seconds=300)
    tokyo = account(timezone="Asia/Tokyo").with_claim(now, until)
    utc = account().with_claim(now, until)
    assert tokyo.count_day == date(2026, 3, 2)
    assert utc.count_day == date(2026, 3, 1)
    assert tokyo.seconds_to_reset(now) == 15.5 * 3600
    assert utc.seconds_to_reset(now) == 1800


def test_a_clock_behind_never_restarts_a_later_days_count() -> None:
    now = datetime(2026, 3, 2, 0, 0, 1, tzinfo=timezone.utc)
    later_day = account(daily_limit=3).with_claim(now, now + timedelta(seconds=300))
    behind = now - timedelta(seconds=3)  # a worker 3 s behind, still on 1 March
    again = later_day.with_claim(behind, behind + timedelta(seconds=300))
    assert (again.count_day, again.sent_count) == (date(2026, 3, 2), 2)
    assert again.sent_today(behind) == 2
    assert again.remaining_today(behind) == 1
