"""A real OAuth2 token endpoint on 127.0.0.1, and the child processes of the
OAuth2 proofs.

:class:`TokenServer` answers the refresh-token grant (RFC 6749, section 6)
over HTTPS (``http.server`` + ``ssl``, with the trustme certificate of the
test suite) or plain HTTP. Each refresh issues a new access token and, with
``rotate=True`` (Microsoft's way), a new refresh token; the old refresh
token keeps working, as Microsoft's does for a while. Every token records
its *generation* (how many refreshes led to it), so a test can tell whether
the newest refresh token was kept. Faults are injected through the server:
:meth:`TokenServer.fail_next` answers with a given status and body,
:meth:`TokenServer.stall_next` stays silent for a while, :meth:`TokenServer.revoke`
makes every token of a user ``invalid_grant``.

:func:`send_from_processes` runs in children spawned by
``workers.run_children`` (tests/storage/workers.py).
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import json
import os
import secrets
import ssl
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "Issued",
    "TokenServer",
    "send_from_processes",
]

CLIENT_ID = "mailpool-test-client.apps.example"
CLIENT_SECRET = "GOCSPX-client-s3cret-never-logged"

_HOST = "127.0.0.1"
_MAX_STALL = 30.0


@dataclass(frozen=True)
class Issued:
    """One successful refresh: the tokens issued, and what they came from."""

    user: str
    generation: int
    access_token: str
    refresh_token: str
    parent: str | None
    """The refresh token that was exchanged (None for a grant)."""


@dataclass(frozen=True)
class _Fault:
    status: int = 0
    body: str = ""
    stall: float = 0.0
    reached: threading.Event | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        form = {
            key: values[0]
            for key, values in parse_qs(self.rfile.read(length).decode()).items()
        }
        status, payload = owner._answer(self.path, dict(self.headers), form)
        body = payload.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows stderr of failing tests


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: TokenServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        context = self.owner.tls_context
        if context is not None:
            # The TLS handshake runs in the request's thread, not the
            # accepting one, so a slow client cannot hold the others.
            request.settimeout(10)
            try:
                wrapped = context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
            # shutdown_request() closes the original socket, not this one.
            with wrapped:
                super().finish_request(wrapped, client_address)
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (a timeout test) is not a server error


class TokenServer:
    """A local token endpoint; ``url`` is its address once started.

    :param tls_context: the server-side TLS context; ``None`` serves plain
        HTTP (which mailpool accepts on loopback only).
    :param rotate: issue a new refresh token with each refresh.
    :param expires_in: the lifetime announced for access tokens (seconds).
    """

    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None,
        client_id: str = CLIENT_ID,
        client_secret: str | None = CLIENT_SECRET,
        rotate: bool = True,
        expires_in: int = 3600,
    ) -> None:
        self.tls_context = tls_context
        self.client_id = client_id
        self.client_secret = client_secret
        self.rotate = rotate
        self.expires_in = expires_in
        self._lock = threading.Lock()
        self._faults: collections.deque[_Fault] = collections.deque()
        self._refresh: dict[str, Issued] = {}  # refresh token -> issue
        self._access: dict[str, str] = {}  # access token -> user
        self._revoked: set[str] = set()
        self._issued: list[Issued] = []
        self._requests: list[dict[str, str]] = []
        self._stopping = threading.Event()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        server = _HTTPServer((_HOST, 0), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> TokenServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_context is not None else "http"
        return f"{scheme}://{_HOST}:{self.port}/token"

    # -- what a test sets up ----------------------------------------------------

    def grant(self, user: str) -> str:
        """A new grant for ``user`` (as after the consent screen): its
        refresh token, generation 0."""
        token = "1//refresh-" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh[token] = Issued(user, 0, "", token, None)
        return token

    def mint(self, user: str) -> Issued:
        """A new grant for ``user`` with a valid access token too (as the
        authorization code exchange gives): generation 0."""
        access = "ya29.access-0-" + secrets.token_urlsafe(16)
        token = "1//refresh-" + secrets.token_urlsafe(24)
        issue = Issued(user, 0, access, token, None)
        with self._lock:
            self._refresh[token] = issue
            self._access[access] = user
        return issue

    def revoke(self, user: str) -> None:
        """Revoke every token of ``user`` (the user withdrew the consent)."""
        with self._lock:
            self._revoked.add(user)

    def fail_next(
        self,
        status: int,
        payload: dict[str, str] | str | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and ``payload``
        (a JSON object, or a raw body)."""
        body = payload if isinstance(payload, str) else json.dumps(payload or {})
        with self._lock:
            self._faults.extend([_Fault(status=status, body=body)] * times)

    def stall_next(self, seconds: float) -> threading.Event:
        """Stay silent ``seconds`` on the next request, then answer it
        normally; the event is set when the request arrived."""
        reached = threading.Event()
        with self._lock:
            self._faults.append(_Fault(stall=min(seconds, _MAX_STALL), reached=reached))
        return reached

    # -- what a test observes ---------------------------------------------------

    @property
    def requests(self) -> list[dict[str, str]]:
        """The form of every request received, in order."""
        with self._lock:
            return [dict(form) for form in self._requests]

    @property
    def issued(self) -> list[Issued]:
        """Every successful refresh, in order."""
        with self._lock:
            return list(self._issued)

    def issue_of(self, refresh_token: str) -> Issued | None:
        """The issue (or grant) that produced ``refresh_token``."""
        with self._lock:
            return self._refresh.get(refresh_token)

    def accepts(self, user: str, access_token: str) -> bool:
        """Whether ``access_token`` is a valid token of ``user`` (for the SMTP
        server's ``oauth_validator``)."""
        with self._lock:
            return self._access.get(access_token) == user and user not in self._revoked

    # -- the endpoint -----------------------------------------------------------

    def _answer(
        self, path: str, headers: dict[str, str], form: dict[str, str]
    ) -> tuple[int, str]:
        with self._lock:
            self._requests.append(form)
            fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault.reached is not None:
            fault.reached.set()
            self._stopping.wait(fault.stall)
        elif fault is not None:
            return fault.status, fault.body
        if path != "/token":
            return 404, json.dumps({"error": "not_found"})
        if form.get("grant_type") != "refresh_token":
            return 400, _error("unsupported_grant_type")
        if form.get("client_id") != self.client_id or form.get("client_secret") != (
            self.client_secret or None
        ):
            return 401, _error("invalid_client", "The OAuth client was not found.")
        with self._lock:
            parent = self._refresh.get(form.get("refresh_token", ""))
            if parent is None or parent.user in self._revoked:
                return 400, _error(
                    "invalid_grant", "Token has been expired or revoked."
                )
            generation = parent.generation + 1
            access = f"ya29.access-{generation}-" + secrets.token_urlsafe(16)
            refresh = (
                f"1//refresh-{generation}-" + secrets.token_urlsafe(24)
                if self.rotate
                else parent.refresh_token
            )
            issue = Issued(
                parent.user, generation, access, refresh, parent.refresh_token
            )
            self._issued.append(issue)
            self._access[access] = parent.user
            if self.rotate:
                self._refresh[refresh] = issue
        answer: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": form.get("scope", ""),
        }
        if self.rotate:
            answer["refresh_token"] = refresh
        return 200, json.dumps(answer)


def _error(code: str, description: str | None = None) -> str:
    payload = {"error": code}
    if description:
        payload["error_description"] = description
    return json.dumps(payload)


# -- in the children of the multi-process proofs --------------------------------


def send_from_processes(
    storage_url: str,
    ca_pem: bytes,
    token_url: str,
    sends: int,
    reuse_connections: bool,
    threads: int,
    start: Any,
    results: Any,
) -> None:
    """Each of ``threads`` threads sends ``sends`` messages through a pool
    on ``storage_url`` whose one account needs its token renewed; reports
    each thread's message ids (see ``workers.report``)."""
    import workers

    from mailpool import AccountPool, RetryPolicy, SMTPTransport, open_storage
    from mailpool.transport import RefreshTokenGrant

    def job() -> list[list[str]]:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
        provider = RefreshTokenGrant(
            ssl_context=context,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token_url=token_url,
        )
        transport = SMTPTransport(
            ssl_context=context,
            token_provider=provider,
            reuse_connections=reuse_connections,
        )
        retry = RetryPolicy(attempts=5, initial_wait=0.05, max_wait=0.5)
        with (
            contextlib.closing(open_storage(storage_url)) as storage,
            AccountPool(storage, transport=transport, retry=retry, failover=0) as pool,
        ):

            def work(index: int) -> list[str]:
                return [
                    pool.send_mail(
                        subject=f"{os.getpid()}-{index}-{n}",
                        body="Hello.",
                        to=["dave@example.net"],
                        wait=30,
                    ).message_id
                    for n in range(sends)
                ]

            sent: list[list[str]] = workers.in_threads(threads, start, work)
            return sent

    workers.report(results, start, job)
