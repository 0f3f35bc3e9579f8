"""Accounts as JSON objects and CSV rows, for show, export and import.

The export format is the JSON storage file's own format, ``{"version": 1,
"accounts": [...]}``, each account an object of :class:`~mailpool.Account`
fields (SMTP settings nested under ``"smtp"``). Secrets are left out unless
asked for. ``accounts import`` reads that format back, a bare list of such
objects, or CSV with one column per field (SMTP settings as ``host``, ``port``
and so on, OAuth2 as ``oauth2.access_token``; tags separated by ``;``).
"""

from __future__ import annotations

import csv
import io
import json
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from mailpool.cli._errors import CommandError
from mailpool.errors import ConfigurationError
from mailpool.models import Account, SMTPSettings

__all__ = [
    "EXPORT_VERSION",
    "account_record",
    "build_account",
    "csv_export",
    "json_export",
    "read_records",
    "secret_fields",
]

EXPORT_VERSION = 1
TRANSIENT = frozenset({"in_flight", "lease_until"})
"""Usage fields of sends in flight in the source storage: not exported."""
TAG_SEPARATOR = ";"
_SMTP_FIELDS = tuple(SMTPSettings.model_fields)
_TRUE = "true"
_FALSE = "false"


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``X`` or ``X | None``), if any."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _record(
    model: BaseModel,
    *,
    secrets: bool,
    found: list[str],
    prefix: str = "",
    mask: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json")
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if _is_secret(field):
            if value is not None:
                found.append(prefix + name)
            if mask is not None:
                data[name] = None if value is None else mask
            elif not secrets:
                del data[name]
            elif isinstance(value, SecretStr):
                data[name] = value.get_secret_value()
        elif isinstance(value, BaseModel):
            data[name] = _record(
                value,
                secrets=secrets,
                found=found,
                prefix=f"{prefix}{name}.",
                mask=mask,
            )
        elif isinstance(value, (set, frozenset)):
            data[name] = sorted(value)
    return data


def account_record(
    account: Account, *, secrets: bool = False, mask: str | None = None
) -> dict[str, Any]:
    """``account`` as a JSON object; every secret field left out unless
    ``secrets`` (then in clear), or shown as ``mask`` when one is given."""
    return _record(account, secrets=secrets, found=[], mask=mask)


def secret_fields(account: Account) -> list[str]:
    """The dotted names of the secrets ``account`` holds, e.g. ``smtp.password``."""
    found: list[str] = []
    _record(account, secrets=False, found=found)
    return found


def _export_record(account: Account, secrets: bool) -> dict[str, Any]:
    record = account_record(account, secrets=secrets)
    for name in TRANSIENT:
        record.pop(name, None)
    return record


def json_export(accounts: Iterable[Account], *, secrets: bool) -> str:
    """The JSON export of ``accounts`` (the JSON storage file format)."""
    document = {
        "version": EXPORT_VERSION,
        "accounts": [_export_record(account, secrets) for account in accounts],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _csv_columns(secrets: bool) -> list[str]:
    columns: list[str] = []
    for name, field in Account.model_fields.items():
        if name in TRANSIENT:
            continue
        model = _model_type(field.annotation)
        if model is None:
            columns.append(name)
            continue
        prefix = "" if model is SMTPSettings else f"{name}."
        columns.extend(
            prefix + sub
            for sub, sub_field in model.model_fields.items()
            if secrets or not _is_secret(sub_field)
        )
    return columns


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, list):
        return TAG_SEPARATOR.join(str(item) for item in value)
    return str(value)


def _flatten(record: Mapping[str, Any]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for name, value in record.items():
        if isinstance(value, dict):
            prefix = "" if name == "smtp" else f"{name}."
            flat.update({prefix + k: _csv_value(v) for k, v in value.items()})
        else:
            flat[name] = _csv_value(value)
    return flat


def csv_export(accounts: Iterable[Account], *, secrets: bool) -> str:
    """The CSV export of ``accounts``: a header row, then one row each."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=_csv_columns(secrets), extrasaction="ignore"
    )
    writer.writeheader()
    for account in accounts:
        writer.writerow(_flatten(_export_record(account, secrets)))
    return buffer.getvalue()


# ------------------------------------------------------------------ import


class _RowError(ValueError):
    """A CSV row that cannot be read as an account."""


def _from_csv_row(row: Mapping[str | None, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        if key is None:
            raise _RowError("more cells than the header has columns")
        name = key.strip()
        if value is None or value == "" or not name:
            continue
        if name in _SMTP_FIELDS:
            nested.setdefault("smtp", {})[name] = value
        elif "." in name:
            group, _, sub = name.partition(".")
            nested.setdefault(group, {})[sub] = value
        elif name == "tags":
            record["tags"] = [
                tag.strip() for tag in value.split(TAG_SEPARATOR) if tag.strip()
            ]
        else:
            record[name] = value
    record.update(nested)
    return record


def read_records(text: str, *, kind: str, source: str) -> list[tuple[str, Any]]:
    """The account records of an import file, each with where it is
    (``"line 3"``, ``"account 2"``).

    :param kind: ``"json"`` or ``"csv"``.
    :raises CommandError: for a file that is not valid JSON or CSV, or a JSON
        document of another shape.
    """
    if kind == "csv":
        return list(_csv_records(text, source))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno}): "
            f"{exc.msg}"
        ) from None
    if isinstance(document, dict):
        version = document.get("version", EXPORT_VERSION)
        if version != EXPORT_VERSION:
            raise CommandError(
                f"{source} has format version {version!r}; this mailpool reads "
                f"version {EXPORT_VERSION}"
            )
        document = document.get("accounts")
    if not isinstance(document, list):
        raise CommandError(
            f'{source} holds no account list: expected {{"version": 1, '
            '"accounts": [...]}} (as exported) or a list of accounts'
        )
    return [(f"account {n}", item) for n, item in enumerate(document, start=1)]


def _csv_records(text: str, source: str) -> Iterator[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        return
    try:
        for row in reader:
            where = f"line {reader.line_num}"
            if not any((value or "").strip() for value in row.values() if value):
                continue  # a blank line
            try:
                yield where, _from_csv_row(row)
            except _RowError as exc:
                raise CommandError(f"{source}, {where}: {exc}") from None
    except csv.Error as exc:
        raise CommandError(
            f"{source} is not valid CSV (line {reader.line_num}): {exc}"
        ) from None


def build_account(record: Any) -> Account:
    """The account a record describes. A ``"provider"`` key
    (``gmail``, ``outlook``, ``yahoo``, ``zoho``) brings the server settings,
    as :meth:`Account.for_provider` does; ``smtp`` may then hold only
    ``username`` and ``password``.

    :raises ConfigurationError: for an invalid account.
    :raises TypeError: for a record that is not a JSON object.
    """
    if not isinstance(record, dict):
        raise TypeError(f"expected a JSON object, found {type(record).__name__}")
    fields: dict[str, Any] = {str(key): value for key, value in record.items()}
    fields.pop("secrets_set", None)  # from `accounts list/show --json`
    provider = fields.pop("provider", None)
    if provider is None or provider == "":
        return Account(**fields)
    smtp = fields.pop("smtp", None) or {}
    if not isinstance(smtp, dict):
        raise TypeError("smtp must be an object")
    others = sorted(set(smtp) - {"username", "password"})
    if others:
        raise ConfigurationError(
            f"provider {provider!r} sets the server: leave out {', '.join(others)}"
        )
    email = fields.pop("email", None)
    if not isinstance(email, str):
        raise ConfigurationError("an account needs an email")
    return Account.for_provider(
        str(provider),
        email=email,
        password=smtp.get("password"),
        username=smtp.get("username"),
        **fields,
    )
