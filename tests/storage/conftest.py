"""Make the helper modules of tests/storage importable by name.

tests/ has no ``__init__.py`` and pytest runs with ``--import-mode=importlib``,
so ``from contract import StorageContract`` and ``from workers import ...``
need this folder on ``sys.path``. Child processes started with the ``spawn``
method inherit the parent's ``sys.path``, so they can import ``workers`` too.
"""

from __future__ import annotations

import pathlib
import sys

_HERE = str(pathlib.Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
