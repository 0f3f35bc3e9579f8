"""The Python snippets of the documentation, as the docs tests see them.

Every ```` ```python ```` block in README.md and docs/*.md is code a reader may
copy, so every one is checked twice:

* tests/test_docs.py **runs** each page's blocks in order, in one namespace,
  against local SMTP servers (see its docstring);
* ``python tests/docsnippets.py typecheck`` (a gate of scripts/test.sh) writes
  each page's blocks as one module and runs ``mypy --strict`` on them, once
  with pydantic's mypy plugin and once without it, as a user's project may
  be configured; the examples/ and tests/typing_usage.py join the second run.

Conventions for the pages:

* A block that cannot run (a placeholder, a file of the reader's own project)
  is marked by an HTML comment on the line before it, with the reason:
  ``<!-- no-run: needs Celery -->``. Keep them rare.
* A block that only includes example files (pymdownx.snippets: the path on
  its own line between two ``--8<--`` lines, the block form, which ruff's
  Markdown formatting leaves alone) is run by tests/test_examples.py instead.
* Names a page uses without defining them (``storage``, ``message``, ...) come
  from its prelude: :data:`PRELUDES` lists them per page, :data:`PRELUDE_TYPES`
  gives their types for mypy, and tests/test_docs.py builds their values.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EXCLUDED: dict[str, str] = {
    "docs/django.md": "files of a Django project: the same code runs in "
    "examples/django_project, under tests/contrib_django/test_django_example.py",
}
"""Pages whose snippets are not checked yet, and why."""

PRELUDE_TYPES: dict[str, tuple[str, str]] = {
    "account": ("Account", "from mailpool import Account"),
    "storage": ("Storage", "from mailpool import Storage"),
    "message": ("EmailMessage", "from email.message import EmailMessage"),
    "messages": ("list[EmailMessage]", "from email.message import EmailMessage"),
    "engine": ("Engine", "from sqlalchemy import Engine"),
    "my_engine": ("Engine", "from sqlalchemy import Engine"),
}
"""The names a prelude may provide: their type and where it comes from."""

PRELUDES: dict[str, tuple[str, ...]] = {
    "docs/getting-started.md": ("message", "messages"),
    "docs/storage.md": ("engine", "my_engine"),
    "docs/custom-storage.md": ("account",),
    "docs/selection.md": ("storage",),
    "docs/transport-and-retries.md": ("storage",),
}
"""Per page, the names its snippets use without defining them."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>.*)$")
_NO_RUN = re.compile(r"^\s*<!--\s*no-run:\s*(?P<reason>\S.*?)\s*-->\s*$")
_INCLUDE = re.compile(r"^\s*-{2}8<-{2}\s+\"(?P<path>[^\"]+)\"\s*$")
_SNIPPETS_MARK = "--8<--"
_FUTURE = re.compile(r"^from __future__ import .*$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a page."""

    page: str
    """The page, relative to the repository root (``docs/storage.md``)."""
    line: int
    """The line of the block's first code line in the page (from 1)."""
    source: str
    """The code, dedented to the fence."""
    no_run: str | None = None
    """The reason given by a ``<!-- no-run: ... -->`` mark, if any."""
    include: str | None = None
    """The example file the block includes (``--8<-- "examples/x.py"``), if any."""

    @property
    def runnable(self) -> bool:
        """Run by tests/test_docs.py (not marked, not an example include)."""
        return self.no_run is None and self.include is None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def padded(self) -> str:
        """The source preceded by blank lines, so line numbers match the page."""
        return "\n" * (self.line - 1) + self.source


def pages() -> list[str]:
    """README.md and every docs/*.md page, minus :data:`EXCLUDED`."""
    found = ["README.md", *(f"docs/{p.name}" for p in sorted(ROOT.glob("docs/*.md")))]
    return [page for page in found if page not in EXCLUDED]


def blocks(page: str) -> list[Block]:
    """The Python blocks of ``page``, in order."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        language = (opening["info"].split() or [""])[0].lower()
        start = index + 1
        end = start
        while end < len(lines):
            closing = _FENCE.match(lines[end])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            end += 1
        if language in ("python", "py"):
            body = [_dedent(line, indent) for line in lines[start:end]]
            found.append(_block(page, start + 1, body, _mark(lines, index)))
        index = end + 1
    return found


def _dedent(line: str, indent: int) -> str:
    return line[indent:] if not line[:indent].strip() else line.lstrip()


def _mark(lines: list[str], fence_index: int) -> str | None:
    before = fence_index - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    marked = _NO_RUN.match(lines[before]) if before >= 0 else None
    return marked["reason"] if marked else None


def _block(page: str, line: int, body: list[str], no_run: str | None) -> Block:
    source = "\n".join(body) + "\n"
    code = [text.strip() for text in body if text.strip()]
    paths: list[str] = []
    if len(code) > 2 and code[0] == code[-1] == _SNIPPETS_MARK:  # block form
        paths = code[1:-1]
    elif code and all(_INCLUDE.match(text) for text in code):  # one-line form
        paths = [match["path"] for text in code if (match := _INCLUDE.match(text))]
    return Block(page, line, source, no_run, ", ".join(paths) or None)


def module_source(page: str) -> tuple[str, list[str]]:
    """The runnable blocks of ``page`` as one module, for mypy, and where each
    of its lines comes from (``"docs/storage.md:42"``, or ``""``).

    The prelude's names are declared with their types; ``from __future__``
    imports move to the top.
    """
    names = PRELUDES.get(page, ())
    imports = sorted({PRELUDE_TYPES[name][1] for name in names})
    lines = ["from __future__ import annotations", *imports]
    lines += [f"{name}: {PRELUDE_TYPES[name][0]}" for name in names]
    origins = [""] * len(lines)
    for block in blocks(page):
        if block.runnable:
            code = _FUTURE.sub("", block.source).splitlines()
            lines += code
            origins += [f"{block.page}:{block.line + n}" for n in range(len(code))]
    return "\n".join(lines) + "\n", origins


def module_name(page: str) -> str:
    """``docs/getting-started.md`` -> ``docs_getting_started``."""
    return re.sub(r"\W", "_", page.removesuffix(".md")).lower()


def write_modules(folder: Path) -> dict[Path, list[str]]:
    """Write one module per page with runnable blocks into ``folder``; return
    each module's line origins (see :func:`module_source`)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for page in pages():
        if any(block.runnable for block in blocks(page)):
            path = folder / f"{module_name(page)}.py"
            text, origins = module_source(page)
            path.write_text(text, encoding="utf-8")
            written[path] = origins
    return written


def _to_pages(report: str, modules: dict[Path, list[str]]) -> str:
    """mypy's report with lines of the generated modules named by their page."""
    by_path = {str(path): origins for path, origins in modules.items()}

    def page_line(match: re.Match[str]) -> str:
        origins = by_path.get(match["path"])
        if origins is None:
            return match[0]
        number = int(match["line"])
        origin = origins[number - 1] if 0 < number <= len(origins) else ""
        return f"{origin or match['path'] + ':' + match['line']}:"

    return re.sub(
        r"^(?P<path>[^:\n]+\.py):(?P<line>\d+):", page_line, report, flags=re.MULTILINE
    )


_MYPY_CONFIG = """\
[mypy]
strict = True
python_version = 3.10
# Sketches in the docs may leave a body out ("def add(...) -> Account: ...").
disable_error_code = empty-body
allow_redefinition = True
cache_dir = {cache_dir}
{plugins}
"""


def typecheck(folder: Path) -> int:
    """Run mypy on the snippets with pydantic's plugin, then without it.

    The run without the plugin also checks examples/ and tests/typing_usage*.py:
    that is how a user's project sees the public API by default.
    """
    from mypy import api

    written = write_modules(folder / "snippets")
    modules = [str(path) for path in written]
    user_files = [
        *modules,
        *sorted(str(p) for p in (ROOT / "examples").glob("*.py")),
        *sorted(str(p) for p in (ROOT / "tests").glob("typing_usage*.py")),
    ]
    status = 0
    for label, plugins, files in (
        ("with pydantic's mypy plugin", "plugins = pydantic.mypy", modules),
        ("without pydantic's mypy plugin", "", user_files),
    ):
        config = folder / f"mypy-{'plugin' if plugins else 'no-plugin'}.ini"
        cache = ROOT / ".mypy_cache" / f"docs-{config.stem}"
        config.write_text(_MYPY_CONFIG.format(cache_dir=cache, plugins=plugins))
        stdout, stderr, code = api.run(["--config-file", str(config), *files])
        print(f"mypy {label}:\n{_to_pages(stdout, written).strip()}", flush=True)
        if stderr:
            print(stderr, file=sys.stderr, flush=True)
        status = status or code
    return status


def main(argv: list[str]) -> int:
    """``python tests/docsnippets.py typecheck [FOLDER]`` or ``write FOLDER``."""
    if len(argv) >= 1 and argv[0] == "typecheck":
        import tempfile

        if len(argv) > 1:
            return typecheck(Path(argv[1]))
        with tempfile.TemporaryDirectory(prefix="mailpool-docs-") as folder:
            return typecheck(Path(folder))
    if len(argv) == 2 and argv[0] == "write":
        for path in write_modules(Path(argv[1])):
            print(path)
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
