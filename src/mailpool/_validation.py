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
    """Return ``value`` stripped, with an internationalized domain in its
    ASCII (IDNA, ``xn--``) form, if it is a plausible ``local@domain`` address.

    The part before ``@`` must be ASCII: internationalized mailboxes need
    SMTPUTF8, which mailpool does not rely on.

    :raises ValueError: with a sentence saying what is wrong.
    """
    if not isinstance(value, str):
        raise ValueError(
            f"an email address must be a string, not {type(value).__name__}"
        )
    address = value.strip()
    local, at, domain = address.rpartition("@")
    problem = None
    if not at or not local or not domain:
        problem = "it needs the form name@domain"
    elif not _LOCAL_PART.fullmatch(local):
        problem = (
            f"the part before '@' ({local!r}) has characters not allowed there "
            "(only ASCII letters, digits and !#$%&'*+/=?^_`{|}~.- are)"
        )
    elif not all(_LABEL.match(label) for label in domain.split(".")):
        problem = f"the domain {domain!r} is not a valid host name"
    else:
        try:
            if not domain.isascii():
                domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            problem = f"the domain {domain!r} is not a valid internationalized name"
        address = f"{local}@{domain}"
        if not problem and len(address) > 254:
            problem = "it is longer than 254 characters"
    if problem:
        raise ValueError(f"{value!r} is not a valid email address: {problem}")
    return address


LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
"""Characters at which Python's email package (``str.splitlines``) starts a
new line: in a header, each could start an injected header line."""

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def check_header_value(name: str, value: str) -> str:
    """Refuse line breaks (CR, LF and every other character that starts a new
    line, such as a form feed or a vertical tab) and other control characters
    in a value that ends up in a mail header.

    :raises ValueError: naming the field.
    """
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    found = _CONTROL.search(value)
    if found:
        what = (
            "line breaks (such as CR, LF, a form feed or a vertical tab)"
            if found.group() in LINE_BREAKS
            else "control characters"
        )
        raise ValueError(
            f"{name} must not contain {what}: found {found.group()!r}, which "
            "could inject extra mail headers"
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
