"""Every Python snippet of README.md and docs/*.md runs, so the docs cannot rot.

tests/docsnippets.py finds the blocks and states the conventions (the
``<!-- no-run: reason -->`` mark, the per-page preludes). Here each page's
runnable blocks run in order in one namespace (a fresh module), in a temporary
working directory, as a reader would paste them into one script. What the
snippets point at that exists only on a reader's machine is mapped to local
stand-ins, the same way for every page:

* **SMTP servers.** Every connection the code opens to a host other than this
  machine (``smtp.gmail.com:587``, ``smtp.example.com``...) reaches a local
  :class:`SMTPTestServer` instead: port 587 a STARTTLS submission server, 465
  an implicit-TLS one, 25 a plain relay; any other port is refused. Their
  certificate names the docs' hosts and is signed by a throwaway CA that the
  default TLS context trusts during the test, so certificates are still
  verified. They accept the logins in :data:`DOC_LOGINS`, as a real server
  would only accept the right password.
* **OAuth2 token endpoints.** HTTPS connections (port 443) reach a local
  token endpoint that renews the refresh tokens in :data:`DOC_REFRESH_TOKENS`
  for their client; the SMTP servers accept the access tokens it issues.
* **Environment variables** the snippets read are set from :data:`DOC_ENV`.
* **Files** under ``/var/lib/`` live under the test's temporary folder.
* **PostgreSQL URLs** become a SQLite file (PostgreSQL itself is tested in
  tests/storage/; this file tests the docs).
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import ssl
import sys
import threading
import types
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import sqlalchemy
import trustme

import docsnippets
from docsnippets import ROOT, Block
from mailpool import (
    Account,
    AccountPool,
    InMemoryStorage,
    JSONStorage,
    SimpleStorage,
    SMTPSettings,
    SQLStorage,
)
from smtpserver import SMTPTestServer

DOC_HOSTS = (
    "*.example.com",
    "example.com",
    "smtp.gmail.com",
    "smtp.office365.com",
    "smtp.mail.yahoo.com",
    "smtp.zoho.com",
    "oauth2.googleapis.com",
    "login.microsoftonline.com",
    "localhost",
    "127.0.0.1",
)
"""The names on the local servers' certificate: the hosts the docs use."""

DOC_LOGINS = {
    "alice@example.com": "app-password",
    "news@example.com": "secret",
    "me@gmail.com": "abcd efgh ijkl mnop",
}
"""The mailboxes the docs log in to, with the passwords the docs use."""

DOC_TOKENS = {"me@contoso.com": "eyJ0..."}
"""The OAuth2 access tokens the docs use, for AUTH XOAUTH2."""

DOC_REFRESH_TOKENS = {
    "1//0g...": (
        "sales@example.com",
        "1234-abc.apps.googleusercontent.com",
        "GOCSPX-...",
    ),
    "1.AUoA...": (
        "sales@contoso.com",
        "00000000-1111-2222-3333-444444444444",
        "abc8Q~...",
    ),
}
"""The refresh tokens the docs use: refresh token -> (mailbox, client id,
client secret), as the provider registered them (docs/oauth2.md)."""

DOC_ENV = {
    "OAUTH_CLIENT_ID": "1234-abc.apps.googleusercontent.com",
    "OAUTH_CLIENT_SECRET": "GOCSPX-...",
}
"""Environment variables the snippets read."""

MUST_SEND = {
    "README.md",
    "docs/getting-started.md",
    "docs/custom-storage.md",
    "docs/oauth2.md",
}
"""Pages whose snippets send: the local servers must have received mail."""

MAX_NO_RUN = 3
"""How many blocks in all the docs may be marked ``no-run``: keep them rare."""

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _access_token(user: str) -> str:
    return f"docs-access-token-of-{user}"


def _accepts(user: str, token: str) -> bool:
    return token == _access_token(user)


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    """The refresh-token grant (RFC 6749, section 6) for DOC_REFRESH_TOKENS."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        known = DOC_REFRESH_TOKENS.get(form.get("refresh_token", ""))
        answer: dict[str, object]
        if form.get("grant_type") != "refresh_token" or known is None:
            status, answer = 400, {"error": "invalid_grant"}
        elif (form.get("client_id"), form.get("client_secret")) != known[1:]:
            status, answer = 401, {"error": "invalid_client"}
        else:
            status = 200
            answer = {
                "access_token": _access_token(known[0]),
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DocsWorld:
    """Local SMTP servers and token endpoint, and the routing of the snippets'
    connections to them."""

    def __init__(
        self, servers: dict[int, SMTPTestServer], token_endpoint: tuple[str, int]
    ) -> None:
        self.servers = servers
        self.token_endpoint = token_endpoint

    def route(self, host: str, port: int) -> tuple[str, int]:
        server = self.servers.get(port)
        if server is not None:
            return server.host, server.port
        if port == 443 and host not in _LOOPBACK:
            return self.token_endpoint
        if host in _LOOPBACK:
            return host, port  # a real local service, e.g. another test server
        raise ConnectionRefusedError(
            f"the docs tests reach no {host}:{port} "
            f"(only ports {sorted(self.servers)} and 443)"
        )

    @property
    def received(self) -> int:
        return sum(len(server.messages) for server in self.servers.values())


@pytest.fixture(scope="module")
def docs_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def world(docs_ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> Iterator[DocsWorld]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    docs_ca.issue_cert(*DOC_HOSTS).configure_cert(server_context)
    common: dict[str, Any] = {
        "users": DOC_LOGINS,
        "tls_context": server_context,
        "require_auth": True,
        "oauth_tokens": DOC_TOKENS,
        "oauth_validator": _accepts,
    }
    servers = {
        25: SMTPTestServer(mode="plain", users=DOC_LOGINS),
        587: SMTPTestServer(mode="starttls", **common),
        465: SMTPTestServer(mode="tls", **common),
    }
    for server in servers.values():
        server.start()
    tokens = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    tokens.daemon_threads = True
    tokens.socket = server_context.wrap_socket(tokens.socket, server_side=True)
    serving = threading.Thread(target=tokens.serve_forever, args=(0.05,))
    serving.start()
    world = DocsWorld(servers, ("127.0.0.1", tokens.server_address[1]))

    real_connect = socket.create_connection
    real_context = ssl.create_default_context

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        return real_connect(world.route(address[0], address[1]), *args, **kwargs)

    def create_default_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = real_context(*args, **kwargs)
        docs_ca.configure_trust(context)
        return context

    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(ssl, "create_default_context", create_default_context)
    try:
        yield world
    finally:
        monkeypatch.undo()
        tokens.shutdown()
        serving.join()
        tokens.server_close()
        for server in servers.values():
            server.stop()


def localize(source: str, root: Path) -> str:
    """``source`` with the reader's locations mapped to local stand-ins."""
    for folder in set(re.findall(r"/var/lib/([\w.-]+)/", source)):
        (root / "var" / "lib" / folder).mkdir(parents=True, exist_ok=True)
    source = source.replace("/var/lib/", f"{root}/var/lib/")
    postgres = f"sqlite:///{root}/postgresql-stand-in.db"
    return re.sub(r"postgres(?:ql)?(?:\+\w+)?://[^\"'\s]+", postgres, source)


def _message(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["To"] = "bob@example.org"
    message["Subject"] = subject
    message.set_content("Hello Bob.")
    return message


def prelude(names: tuple[str, ...], root: Path) -> dict[str, object]:
    """The values of a page's prelude (types: docsnippets.PRELUDE_TYPES)."""
    account = Account(
        email="alice@example.com",
        sender_name="Alice Example",
        owner="acme",
        tags={"spring-campaign"},
        smtp=SMTPSettings(
            host="smtp.example.com",
            port=587,
            username="alice@example.com",
            password="app-password",
        ),
    )

    def storage() -> InMemoryStorage:
        memory = InMemoryStorage()
        memory.add(account)
        return memory

    factories: dict[str, Callable[[], object]] = {
        "account": lambda: account,
        "storage": storage,
        "message": lambda: _message("Hello"),
        "messages": lambda: [_message(f"News #{n}") for n in range(1, 4)],
        "engine": lambda: sqlalchemy.create_engine(f"sqlite:///{root}/engine.db"),
        "my_engine": lambda: sqlalchemy.create_engine(f"sqlite:///{root}/mine.db"),
    }
    return {name: factories[name]() for name in names}


def _close_everything(namespace: dict[str, Any], opened: list[Any]) -> None:
    for value in [*namespace.values(), *opened]:
        if isinstance(
            value,
            (AccountPool, InMemoryStorage, JSONStorage, SQLStorage, SimpleStorage),
        ):
            value.close()
        elif isinstance(value, sqlalchemy.Engine):
            value.dispose()


def run_page(page: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the runnable blocks of ``page`` in order, in one fresh module.

    Pools and SQL storages the snippets open are closed at the end, even those
    a later block replaced (a page may show alternatives one after the other).
    """
    name = f"mailpool_docs_{docsnippets.module_name(page)}"
    module = types.ModuleType(name)
    module.__dict__.update(prelude(docsnippets.PRELUDES.get(page, ()), root))
    opened: list[Any] = []
    for cls in (AccountPool, SQLStorage):
        monkeypatch.setattr(cls, "__init__", _recording(cls.__init__, opened))
    sys.modules[name] = module
    try:
        for block in docsnippets.blocks(page):
            if block.runnable:
                _run(block, module, root)
    finally:
        _close_everything(module.__dict__, opened)
        del sys.modules[name]


def _recording(init: Callable[..., None], opened: list[Any]) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        opened.append(self)

    return __init__


def _run(block: Block, module: types.ModuleType, root: Path) -> None:
    # Compiled under the page's own file name, with the page's line numbers:
    # a traceback shows the failing line of the Markdown file.
    code = compile(
        localize(block.padded(), root),
        str(ROOT / block.page),
        "exec",
        dont_inherit=True,
    )
    exec(code, module.__dict__)


RUNNABLE_PAGES = [
    page
    for page in docsnippets.pages()
    if any(block.runnable for block in docsnippets.blocks(page))
]


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_page_snippets_run(
    page: str,
    world: DocsWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILPOOL_STORAGE", raising=False)
    for name, value in DOC_ENV.items():
        monkeypatch.setenv(name, value)
    run_page(page, tmp_path, monkeypatch)
    if page in MUST_SEND:
        assert world.received > 0, f"{page} sent nothing to the local servers"


# -- the runner's own rules ------------------------------------------------------


def test_every_page_is_checked_or_excluded_with_a_reason() -> None:
    pages = {"README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))}
    assert set(docsnippets.pages()) == pages - set(docsnippets.EXCLUDED)
    assert all(reason for reason in docsnippets.EXCLUDED.values())


def test_preludes_name_real_pages_and_known_names() -> None:
    for page, names in docsnippets.PRELUDES.items():
        assert (ROOT / page).is_file(), page
        assert set(names) <= set(docsnippets.PRELUDE_TYPES), page


def test_no_run_marks_are_rare_and_give_a_reason() -> None:
    marked = [
        block.where
        for page in docsnippets.pages()
        for block in docsnippets.blocks(page)
        if block.no_run is not None
    ]
    assert len(marked) <= MAX_NO_RUN, marked
    for page in docsnippets.pages():
        for number, line in enumerate((ROOT / page).read_text().splitlines(), 1):
            if "no-run" in line and line.strip().startswith("<!--"):
                assert docsnippets._NO_RUN.match(line), f"{page}:{number}: no reason"


def test_included_examples_exist_and_are_run_by_test_examples() -> None:
    examples_test = (ROOT / "tests" / "test_examples.py").read_text()
    for page in docsnippets.pages():
        for block in docsnippets.blocks(page):
            for path in filter(None, (block.include or "").split(", ")):
                assert (ROOT / path).is_file(), f"{block.where}: {path}"
                assert Path(path).name in examples_test, f"{path} is run by no test"


def test_blocks_are_found_with_their_lines_marks_and_includes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "docs" / "sample.md"
    page.parent.mkdir()
    page.write_text(
        "# Sample\n"
        "\n"
        "```python\n"
        "x = 1\n"
        "```\n"
        "\n"
        "````markdown\n"
        "```python\n"
        "not_code = True\n"
        "```\n"
        "````\n"
        "\n"
        "1. In a list:\n"
        "\n"
        "    ```python\n"
        "    if x:\n"
        "        y = 2\n"
        "    ```\n"
        "\n"
        "<!-- no-run: a placeholder -->\n"
        "```python\n"
        "send(...)\n"
        "```\n"
        "\n"
        "```python\n"
        '--8<-- "examples/app.py"\n'
        "```\n"
        "\n"
        "```python\n"
        "--8<--\n"
        "examples/one.py\n"
        "examples/two.py\n"
        "--8<--\n"
        "```\n"
        "\n"
        "```console\n"
        "$ pip install mailpool\n"
        "```\n"
    )
    monkeypatch.setattr(docsnippets, "ROOT", tmp_path)
    found = docsnippets.blocks("docs/sample.md")
    assert [(b.line, b.source, b.no_run, b.include) for b in found] == [
        (4, "x = 1\n", None, None),
        (16, "if x:\n    y = 2\n", None, None),
        (22, "send(...)\n", "a placeholder", None),
        (26, '--8<-- "examples/app.py"\n', None, "examples/app.py"),
        (
            30,
            "--8<--\nexamples/one.py\nexamples/two.py\n--8<--\n",
            None,
            "examples/one.py, examples/two.py",
        ),
    ]
    assert [b.runnable for b in found] == [True, True, False, False, False]
    text, origins = docsnippets.module_source("docs/sample.md")
    assert "if x:\n    y = 2\n" in text
    assert origins[text.splitlines().index("    y = 2")] == "docs/sample.md:17"


def test_a_failing_snippet_names_its_page_and_line(tmp_path: Path) -> None:
    block = Block("docs/storage.md", 7, "ok = 1\nraise RuntimeError('boom')\n")
    with pytest.raises(RuntimeError) as raised:
        _run(block, types.ModuleType("scratch"), tmp_path)
    where = raised.traceback[-1]
    assert (str(where.path), where.lineno + 1) == (str(ROOT / "docs/storage.md"), 8)


def test_locations_are_mapped_to_local_stand_ins(tmp_path: Path) -> None:
    source = (
        'open_storage("json:///var/lib/myapp/accounts.json")\n'
        'SQLStorage("postgresql+psycopg://app:secret@db.internal/app")\n'
        'create_mock_engine("postgresql+psycopg://", dump)\n'
    )
    assert localize(source, tmp_path).splitlines() == [
        f'open_storage("json://{tmp_path}/var/lib/myapp/accounts.json")',
        f'SQLStorage("sqlite:///{tmp_path}/postgresql-stand-in.db")',
        'create_mock_engine("postgresql+psycopg://", dump)',
    ]
    assert (tmp_path / "var" / "lib" / "myapp").is_dir()


def test_the_world_refuses_the_network(world: DocsWorld) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("smtp.example.com", 2525), timeout=1)
    assert world.route("oauth2.googleapis.com", 443) == world.token_endpoint
    assert world.route("smtp.gmail.com", 587) == (
        world.servers[587].host,
        world.servers[587].port,
    )
