"""The command's own error and its exit codes."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "CommandError"]

EXIT_OK = 0
"""The command did what was asked."""
EXIT_FAILED = 1
"""It ran, but a connection test or a send failed (or nothing was tested)."""
EXIT_USAGE = 2
"""It could not run: bad usage, configuration, storage or input."""


class CommandError(Exception):
    """An error the command reports as one line on stderr, then exits ``code``."""

    def __init__(self, message: str, *, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code
