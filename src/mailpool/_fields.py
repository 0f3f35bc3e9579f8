"""Field types that accept more than they hold, for every type checker.

pydantic turns ``password="app-password"`` into a ``SecretStr`` and
``tags={"a"}`` into a ``frozenset``. pydantic's mypy plugin types ``__init__``
loosely, but without it a type checker derives each ``__init__`` parameter
from the field's annotation (PEP 681), and ``SMTPSettings(password="...")``
would fail ``mypy --strict`` in a user's project.

So, for type checkers only, these aliases are descriptors: reading the field
gives the type the model holds, while assigning it (and so the generated
``__init__``) accepts the input type as well (PEP 681 "descriptor-typed
fields"). At run time they are the plain annotations pydantic validates.
A descriptor-typed field's default needs ``# type: ignore[assignment]``
(mypy checks a class-level default against the descriptor's own type).
tests/typing_usage.py and ``python tests/docsnippets.py typecheck`` check it.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from pydantic import SecretStr

__all__ = ["Secret", "Tags"]

if TYPE_CHECKING:
    _Read = TypeVar("_Read")
    _Write = TypeVar("_Write")

    class _Field(Generic[_Read, _Write]):
        """Reads as ``_Read``; accepts ``_Write`` in ``__init__``."""

        @overload
        def __get__(self, obj: None, owner: Any, /) -> _Field[_Read, _Write]: ...
        @overload
        def __get__(self, obj: object, owner: Any, /) -> _Read: ...
        def __get__(self, obj: object, owner: Any, /) -> Any: ...
        def __set__(self, obj: object, value: _Write, /) -> None: ...

    Secret = _Field[SecretStr | None, SecretStr | str | None]
    Tags = _Field[frozenset[str], AbstractSet[str]]
else:
    Secret = SecretStr | None
    """A secret: a ``SecretStr`` (or ``None``); a plain ``str`` is accepted."""
    Tags = frozenset[str]
    """A set of tags: a ``frozenset``; any set of strings is accepted."""
