"""Plain-text tables, JSON, one-line errors and a progress bar (stdlib only)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

__all__ = ["Output", "Progress", "cell", "count", "duration", "one_line"]

PROGRESS_INTERVAL = 0.1
"""Seconds between two redraws of a progress bar."""


def one_line(text: str) -> str:
    """``text`` on one line: line breaks and other control characters become
    spaces, runs of spaces one space."""
    cleaned = "".join(char if char.isprintable() else " " for char in text)
    return " ".join(cleaned.split())


def cell(value: object) -> str:
    """A table cell: ``-`` for nothing, lists joined with commas, one line."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(sorted(str(item) for item in value)) or "-"
    return one_line(str(value))


def count(number: int, noun: str) -> str:
    """``1 account``, ``2 accounts``."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def duration(seconds: float) -> str:
    """``seconds`` for a person: ``12s``, ``3m 20s``, ``5h 03m``."""
    whole = max(int(seconds + 0.999), 0)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


class Output:
    """Where results (stdout) and errors (stderr) go.

    :param as_json: print results as one JSON document instead of text.
    :param secrets: strings never to show in an error (replaced by ``***``).
    """

    def __init__(
        self, stdout: TextIO, stderr: TextIO, *, as_json: bool, secrets: set[str]
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.as_json = as_json
        self.secrets = secrets

    def json(self, data: Any) -> None:
        """Print ``data`` as indented JSON."""
        json.dump(data, self.stdout, indent=2, ensure_ascii=False)
        self.stdout.write("\n")

    def line(self, text: str = "") -> None:
        """Print one line of text output."""
        self.stdout.write(text + "\n")

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        """Print aligned columns under ``headers``."""
        body = [list(row) for row in rows]
        widths = [
            max([len(header)] + [len(row[i]) for row in body])
            for i, header in enumerate(headers)
        ]
        for row in [list(headers), *body]:
            self.line(
                "  ".join(
                    value.ljust(width) for value, width in zip(row, widths, strict=True)
                ).rstrip()
            )

    def scrub(self, text: str) -> str:
        """``text`` on one line with every known secret replaced by ``***``."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
        return one_line(text)

    def error(self, text: str) -> None:
        """Print ``mailpool: text`` on one line of stderr, secrets hidden."""
        self.stderr.write(f"mailpool: {self.scrub(text)}\n")
        self.stderr.flush()

    def progress(self, label: str, total: int, *, minimum: int) -> Progress:
        """A progress bar on stderr, drawn only when stderr is a terminal and
        there are at least ``minimum`` steps."""
        return Progress(self.stderr, label, total, enabled=total >= minimum)


class Progress:
    """``label [#####.....] 50/100`` redrawn in place on a terminal."""

    WIDTH = 30

    def __init__(
        self, stream: TextIO, label: str, total: int, *, enabled: bool
    ) -> None:
        isatty = getattr(stream, "isatty", None)
        self.enabled = enabled and total > 0 and callable(isatty) and bool(isatty())
        self._stream = stream
        self._label = label
        self._total = total
        self._done = 0
        self._drawn_at = 0.0

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` more done; redraw at most every 0.1 s."""
        self._done = min(self._done + steps, self._total)
        now = time.monotonic()
        if self.enabled and (
            now - self._drawn_at >= PROGRESS_INTERVAL or self._done == self._total
        ):
            self._drawn_at = now
            self._draw()

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self) -> None:
        filled = self.WIDTH * self._done // self._total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self._stream.write(f"\r{self._label} [{bar}] {self._done}/{self._total}")
        self._stream.flush()
