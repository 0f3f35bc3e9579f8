"""Checks shared by the models and the pool: addresses and header values."""

from __future__ import annotations

import re
from email.headerregistry import AddressHeader, HeaderRegistry
from email.message import EmailMessage

from pydantic import ValidationError

from mailpool.errors import ConfigurationError

_LOCAL_PART = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)
_LABEL = re.compile(r"(?!-)[^\W_](?:[\w-]{0,61}[^\W_])?(?<!-)\Z")


def check_email(value: str) -> str:
    """Return ``value`` stripped if it is a plausible ``local@domain`` address.

    :raises ValueError: with a sentence saying what is wrong.
    """
    address = value.strip()
    local, at, domain = address.rpartition("@")
    problem = None
    if not at or not local or not domain:
        problem = "it needs the form name@domain"
    elif len(address) > 254:
        problem = "it is longer than 254 characters"
    elif not _LOCAL_PART.fullmatch(local):
        problem = f"the part before '@' ({local!r}) has characters not allowed there"
    elif not all(_LABEL.match(label) for label in domain.split(".")):
        problem = f"the domain {domain!r} is not a valid host name"
    if problem:
        raise ValueError(f"{value!r} is not a valid email address: {problem}")
    return address


def check_header_value(name: str, value: str) -> str:
    """Refuse CR and LF in a value that ends up in a mail header.

    :raises ValueError: naming the field.
    """
    if "\r" in value or "\n" in value:
        raise ValueError(
            f"{name} must not contain line breaks (CR or LF): they would let the "
            "value inject extra mail headers"
        )
    return value


def describe(model: str, problems: list[tuple[str, str]]) -> str:
    """One readable sentence per problem: ``invalid Account: smtp.port: ...``."""
    parts = [f"{where}: {text}" if where else text for where, text in problems]
    return f"invalid {model}: " + "; ".join(parts)


def problems(error: ValidationError) -> list[tuple[str, str]]:
    """``(field, problem)`` pairs of a ValidationError, without input values.

    A nested model's own ``ConfigurationError`` is unfolded, so a problem of
    ``Account.smtp`` reads ``("smtp.port", "Input should be ...")``.
    """
    found = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        nested = item.get("ctx", {}).get("error")
        if isinstance(nested, ConfigurationError) and nested.problems:
            for inner, text in nested.problems:
                path = f"{where}.{inner}" if where and inner else where or inner
                found.append((path, text))
        else:
            found.append((where, item["msg"].removeprefix("Value error, ")))
    return found


_REGISTRY = HeaderRegistry()


def message_recipients(message: EmailMessage) -> list[str]:
    """Every address of To, Cc and Bcc; an empty group adds none."""
    found: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for value in message.get_all(name, []):
            header = value
            if not isinstance(header, AddressHeader):  # compat32 keeps plain str
                header = _REGISTRY(name, str(value))
            assert isinstance(header, AddressHeader)
            found += [address.addr_spec for address in header.addresses]
    return found
