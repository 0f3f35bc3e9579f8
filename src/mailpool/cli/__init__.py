"""The ``mailpool`` command: operate the accounts of a storage from a shell.

Run ``mailpool --help``; the reference is ``docs/cli.md``. The entry point is
:func:`main` (the ``mailpool`` console script and ``python -m mailpool``).

.. versionchanged:: 0.2
   ``accounts``, ``test-accounts``, ``reset-daily``, ``usage`` and ``send``
   commands on ``--storage URL`` / ``MAILPOOL_STORAGE``; ``--json``.
"""

from __future__ import annotations

from mailpool.cli._main import main

__all__ = ["main"]
