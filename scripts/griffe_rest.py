"""A griffe extension that renders the reST bits of mailpool's docstrings.

mailpool's docstrings use reST (``:param:`` and ``:raises:`` fields, parsed by
mkdocstrings' ``sphinx`` docstring style) plus a few inline roles and
directives that the sphinx parser leaves as they are. This turns them into
Markdown before mkdocstrings renders the API reference (docs/api.md):

* ``:class:`~mailpool.Account``` (any Python-domain role) -> ```Account```;
* ``.. versionadded:: 0.2`` (and ``versionchanged``, ``deprecated``) -> a line
  in italics;
* ``.. code-block:: python`` followed by an indented block -> a fenced block.

Loaded by mkdocs.yml (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:class|meth|func|attr|data|exc|mod|obj|const|type):`([^`]+)`"
)
_TITLED = re.compile(r"^(.*?)\s*<([^>]+)>$")
_VERSION = re.compile(
    r"^(?P<indent>[ \t]*)\.\. (?P<kind>versionadded|versionchanged|deprecated)::"
    r"[ \t]*(?P<version>\S+)[ \t]*(?P<text>.*)$",
    re.MULTILINE,
)
_CODE = re.compile(
    r"^(?P<indent>[ \t]*)\.\. code-block::[ \t]*(?P<lang>\w*)[ \t]*\n"
    r"(?P<body>(?:(?:(?P=indent)[ \t]+.*)?\n)+)",
    re.MULTILINE,
)
_VERSION_WORDS = {
    "versionadded": "New in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
}


def _role(match: re.Match[str]) -> str:
    target = match.group(1)
    titled = _TITLED.match(target)
    if titled:
        return f"`{titled.group(1)}`"
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def _version(match: re.Match[str]) -> str:
    words = _VERSION_WORDS[match.group("kind")]
    text = match.group("text").strip()
    line = f"*{words} {match.group('version')}{': ' + text if text else '.'}*"
    return match.group("indent") + line


def _code(match: re.Match[str]) -> str:
    indent = match.group("indent")
    body = textwrap.dedent(match.group("body")).strip("\n")
    lang = match.group("lang") or "text"
    fenced = f"```{lang}\n{body}\n```\n\n"
    return textwrap.indent(fenced, indent) if indent else fenced


def rest_to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST roles and directives as Markdown."""
    text = _CODE.sub(_code, text + "\n").rstrip("\n")
    text = _VERSION.sub(_version, text)
    return _ROLE.sub(_role, text)


class RestRoles(griffe.Extension):
    """Rewrite every docstring once it is loaded (before it is parsed)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rest_to_markdown(obj.docstring.value)
