"""OAuth2 access tokens for ``AUTH XOAUTH2``, renewed without a person.

- :class:`TokenProvider` is the seam: anything that turns an account into new
  credentials. :class:`RefreshTokenGrant`, the default, performs the standard
  refresh-token grant (RFC 6749, section 6) over HTTPS with the standard
  library: certificates verified, a timeout, ``http://`` only on loopback.
- :class:`SMTPTransport` asks for a new access token shortly before the stored
  one expires, and once more when the server refuses it. What follows a
  refresh is in :class:`TokenKeeper`: one refresh per account at a time in a
  process, a re-read of the stored account first (another worker may have
  refreshed it already), and a save guarded by a compare-and-set on the
  stored refresh token, so that neither a concurrent refresh nor a stale
  worker ever replaces a newer refresh token with an older one.

Secrets stay out of ``repr``, logs, error messages and exception chains: the
frames a refresh error passes through hold no token in a local variable, and
causes are stripped of their tracebacks (:func:`~mailpool.transport._errors.scrubbed`).

.. versionadded:: 0.2
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, runtime_checkable

from pydantic import SecretStr

from mailpool.errors import (
    AccountNotFound,
    AuthenticationError,
    ConfigurationError,
    MailpoolError,
    SendError,
    TemporarySendError,
)
from mailpool.models import Account, OAuth2Credentials, _check_token_url
from mailpool.providers import PROVIDERS
from mailpool.storage.base import Storage
from mailpool.storage.simple import SimpleStorage
from mailpool.transport._errors import scrubbed

__all__ = [
    "RefreshTokenGrant",
    "TokenKeeper",
    "TokenProvider",
    "TokenStore",
    "same_login",
]

log = logging.getLogger("mailpool.oauth2")

DEFAULT_EXPIRES_IN = 3600
"""Seconds an access token is taken to live when the endpoint does not say."""
_MAX_BODY = 64 * 1024
"""The most bytes read from a token endpoint's answer."""
_MAX_DESCRIPTION = 300
"""The most characters of an endpoint's ``error_description`` kept."""
_TEMPORARY_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
_HOW_TO = "see docs/oauth2.md"


@runtime_checkable
class TokenProvider(Protocol):
    """**Protocol**: gets a new OAuth2 access token for an account.

    .. versionadded:: 0.2
    """

    def refresh(self, account: Account, /) -> OAuth2Credentials | None:
        """New credentials for ``account``: its ``oauth2`` with a new
        ``access_token`` and ``token_expiry`` (and a new ``refresh_token``
        when the provider rotated it).

        :returns: ``None`` when this provider cannot refresh the account
            (e.g. it has no refresh token).
        :raises AuthenticationError: the grant is refused for good (revoked,
            expired, wrong client): the account needs a person.
        :raises TemporarySendError: try again later (timeout, 5xx).
        :raises SendError: any other failure.
        """
        ...


@runtime_checkable
class TokenStore(Protocol):
    """**Protocol** (optional, for storages): renewed OAuth2 tokens saved
    with one atomic compare-and-set.

    A storage that has this method is safe for any number of processes
    renewing one account at once. Without it, :class:`TokenKeeper` uses the
    lock of a :class:`~mailpool.SimpleStorage`, or else a read then an
    :meth:`~mailpool.Storage.update`, where a worker that saves late may
    replace a newer refresh token (and settings changed in between).

    .. versionadded:: 0.2
    """

    def save_oauth2_tokens(
        self,
        account_id: str,
        tokens: OAuth2Credentials,
        /,
        *,
        replacing: SecretStr | None,
    ) -> Account:
        """Atomically: when the stored refresh token equals ``replacing``,
        store the ``access_token``, ``refresh_token`` and ``token_expiry`` of
        ``tokens``; change nothing else, and nothing at all otherwise.

        :returns: the account as stored afterwards, changed or not.
        :raises AccountNotFound: when there is no such account.
        """
        ...


# -- the refresh-token grant ---------------------------------------------------


@dataclass(frozen=True)
class _Grant:
    """What one refresh request sends (secrets stay SecretStr)."""

    token_url: str
    client_id: str
    client_secret: SecretStr | None
    refresh_token: SecretStr
    scope: str | None


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class _Fields:
    """The parts of a token response mailpool reads (tokens as SecretStr)."""

    access_token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    expires_in: float | None = None
    token_type: str | None = None
    error: str | None = None
    description: str | None = None
    json: bool = False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A token endpoint that redirects is misconfigured: never follow it
    (a POST body holds the refresh token and the client secret)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class RefreshTokenGrant:
    """The default :class:`TokenProvider`: the OAuth2 refresh-token grant.

    The account's :class:`~mailpool.OAuth2Credentials` say where and as whom:
    ``refresh_token``, ``client_id``, ``client_secret`` (none for public
    clients), ``token_url`` and ``scope``. The token URL and scope default to
    the provider preset of the account's ``connection_type`` (Gmail,
    Outlook), then to the values given here; the client id and secret
    default to the ones given here, so that one app registration can serve
    every account without storing its secret in each of them.

    :param timeout: seconds for connecting and for each read.
    :param ssl_context: TLS settings for the token endpoint; the default
        verifies certificates against the system's CAs.
    :param client_id: the OAuth client id of accounts that store none.
    :param client_secret: the client secret of accounts that store none.
    :param token_url: the token endpoint of accounts without one (and
        without a provider preset).
    :param scope: the scope requested for accounts without one.
    :raises ConfigurationError: for a timeout that is not a positive number
        or a ``token_url`` that is not ``https://``.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        client_id: str | None = None,
        client_secret: str | SecretStr | None = None,
        token_url: str | None = None,
        scope: str | None = None,
    ) -> None:
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout)) or (
            timeout <= 0
        ):
            raise ConfigurationError(
                "RefreshTokenGrant timeout must be a positive number of seconds "
                f"(got {timeout!r})"
            )
        try:
            self.token_url = _check_token_url(token_url)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.timeout = float(timeout)
        self.client_id = client_id
        self.client_secret = (
            SecretStr(client_secret)
            if isinstance(client_secret, str)
            else client_secret
        )
        self.scope = scope
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"<RefreshTokenGrant timeout={self.timeout}>"

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context in use (created on first use when none was given)."""
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def refresh(self, account: Account, /) -> OAuth2Credentials | None:
        """Exchange the account's refresh token for a new access token.

        See :meth:`TokenProvider.refresh`.
        """
        oauth = account.oauth2
        if oauth is None or oauth.refresh_token is None:
            return None
        grant = self._grant(account, oauth, oauth.refresh_token)
        host = urllib.parse.urlsplit(grant.token_url).netloc
        with scrubbed():
            answer = self._post(account, grant, host)
            return _credentials(account, oauth, grant, host, answer)

    def _grant(
        self, account: Account, oauth: OAuth2Credentials, refresh_token: SecretStr
    ) -> _Grant:
        preset = next(
            (
                p
                for p in PROVIDERS.values()
                if p.connection_type == account.connection_type and p.token_url
            ),
            None,
        )
        token_url = oauth.token_url or (preset and preset.token_url) or self.token_url
        client_id = oauth.client_id or self.client_id
        missing = [
            name
            for name, value in (("token_url", token_url), ("client_id", client_id))
            if not value
        ]
        if token_url is None or client_id is None:
            raise AuthenticationError(
                f"cannot renew the OAuth2 access token of {account.email}: its "
                f"credentials have no {' and no '.join(missing)}; store them in "
                f"OAuth2Credentials or pass them to RefreshTokenGrant ({_HOW_TO})",
                account_id=account.id,
            )
        return _Grant(
            token_url=token_url,
            client_id=client_id,
            client_secret=oauth.client_secret or self.client_secret,
            refresh_token=refresh_token,
            scope=oauth.scope or (preset and preset.scope) or self.scope,
        )

    def _post(self, account: Account, grant: _Grant, host: str) -> _Answer:
        """POST the grant; the answer whatever its status, or a SendError when
        none came."""
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if grant.token_url.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=self.ssl_context))
        opener = urllib.request.build_opener(*handlers)
        where = f"the token endpoint {host}"
        aid = account.id
        try:
            with opener.open(_request(grant), timeout=self.timeout) as response:
                return _Answer(response.status, response.read(_MAX_BODY))
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                return _Answer(exc.code, _read_error_body(exc))
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise SendError(
                    f"the TLS certificate of {where} could not be verified "
                    f"({reason.verify_message}): for a private CA pass "
                    "RefreshTokenGrant(ssl_context=...) that trusts it",
                    account_id=aid,
                ) from exc
            if isinstance(reason, ssl.SSLError) and not isinstance(
                reason, (ssl.SSLEOFError, ssl.SSLZeroReturnError)
            ):
                raise SendError(
                    f"TLS with {where} failed ({reason.reason})", account_id=aid
                ) from exc
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise TemporarySendError(
                    f"{where} did not answer within {self.timeout:g} s",
                    account_id=aid,
                ) from exc
            raise TemporarySendError(
                f"cannot reach {where}: {reason}", account_id=aid
            ) from exc
        except TimeoutError as exc:
            raise TemporarySendError(
                f"{where} did not answer within {self.timeout:g} s", account_id=aid
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TemporarySendError(
                f"the connection to {where} failed ({type(exc).__name__})",
                account_id=aid,
            ) from exc


def _request(grant: _Grant) -> urllib.request.Request:
    """The POST request of ``grant`` (the form, secrets included, lives only
    inside the returned request)."""
    form = {
        "grant_type": "refresh_token",
        "refresh_token": grant.refresh_token.get_secret_value(),
        "client_id": grant.client_id,
    }
    if grant.client_secret is not None:
        form["client_secret"] = grant.client_secret.get_secret_value()
    if grant.scope:
        form["scope"] = grant.scope
    return urllib.request.Request(
        grant.token_url,
        data=urllib.parse.urlencode(form).encode("ascii"),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": "mailpool",
        },
        method="POST",
    )


def _read_error_body(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read(_MAX_BODY)
    except (OSError, http.client.HTTPException):
        return b""


def _fields(body: bytes, grant: _Grant) -> _Fields:
    """The token response's fields; never raises (its locals hold tokens)."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _Fields()
    if not isinstance(payload, dict):
        return _Fields()

    def text(name: str) -> str | None:
        value = payload.get(name)
        return value if isinstance(value, str) and value else None

    access, refresh = text("access_token"), text("refresh_token")
    expires = payload.get("expires_in")
    try:
        expires_in = float(expires) if expires is not None else None
    except (TypeError, ValueError):
        expires_in = None
    if expires_in is not None and not (math.isfinite(expires_in) and expires_in > 0):
        expires_in = None
    description = text("error_description")
    if description is not None:
        secrets = [grant.refresh_token.get_secret_value(), access, refresh]
        if grant.client_secret is not None:
            secrets.append(grant.client_secret.get_secret_value())
        for secret in secrets:
            if secret:
                description = description.replace(secret, "***")
        description = "".join(c if c.isprintable() else " " for c in description)
        description = description.strip()[:_MAX_DESCRIPTION] or None
    return _Fields(
        access_token=SecretStr(access) if access else None,
        refresh_token=SecretStr(refresh) if refresh else None,
        expires_in=expires_in,
        token_type=text("token_type"),
        error=text("error"),
        description=description,
        json=True,
    )


def _credentials(
    account: Account,
    oauth: OAuth2Credentials,
    grant: _Grant,
    host: str,
    answer: _Answer,
) -> OAuth2Credentials:
    """The new credentials in a successful answer, or the error it means."""
    fields = _fields(answer.body, grant)
    aid, where = account.id, f"the token endpoint {host}"
    status = answer.status
    said = fields.error or f"HTTP {status}"
    if fields.description:
        said += f": {fields.description}"
    if 200 <= status < 300:
        bearer = fields.token_type is None or fields.token_type.lower() == "bearer"
        if fields.access_token is None or not bearer:
            raise SendError(
                f"{where} answered HTTP {status} without a bearer access token "
                f"for {account.email}",
                account_id=aid,
            )
        expires_in = fields.expires_in or DEFAULT_EXPIRES_IN
        return oauth.model_copy(
            update={
                "access_token": fields.access_token,
                "refresh_token": fields.refresh_token or oauth.refresh_token,
                "token_expiry": datetime.now(timezone.utc)
                + timedelta(seconds=expires_in),
            }
        )
    if status >= 500 or status in (408, 429) or fields.error in _TEMPORARY_ERRORS:
        raise TemporarySendError(
            f"{where} could not renew the OAuth2 access token of {account.email} "
            f"for now ({said}); it is tried again later",
            account_id=aid,
        )
    if fields.error == "invalid_grant":
        raise AuthenticationError(
            f"{where} refused the OAuth2 refresh token of {account.email} "
            f"({said}): the grant was revoked or has expired (a password "
            "change, a revoked app consent, or Google's 7-day limit for apps in "
            "testing mode). Authorize the account again, store the new refresh "
            f"token and set the account active ({_HOW_TO})",
            account_id=aid,
        )
    if fields.error in ("invalid_client", "unauthorized_client"):
        raise AuthenticationError(
            f"{where} refused the OAuth2 client of {account.email} ({said}): "
            "check client_id and client_secret (client secrets expire, e.g. "
            "Microsoft's after at most 2 years), then set the account active "
            f"({_HOW_TO})",
            account_id=aid,
        )
    if 400 <= status < 500:
        raise AuthenticationError(
            f"{where} refused to renew the OAuth2 access token of "
            f"{account.email} ({said}): check token_url, client_id and scope, "
            f"then set the account active ({_HOW_TO})",
            account_id=aid,
        )
    raise SendError(
        f"{where} answered {said} to the refresh of {account.email}'s token",
        account_id=aid,
    )


# -- keeping the newest tokens -------------------------------------------------

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _refresh_lock(account_id: str) -> Iterator[None]:
    """One refresh of an account at a time in this process (every transport)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(account_id, threading.Lock())
    with lock:
        yield


def _with_tokens(
    oauth: OAuth2Credentials, tokens: OAuth2Credentials
) -> OAuth2Credentials:
    """``oauth`` (its client, URL and scope) with the tokens of ``tokens``."""
    return oauth.model_copy(
        update={
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "token_expiry": tokens.token_expiry,
        }
    )


def same_login(a: Account, b: Account) -> bool:
    """True when ``a`` and ``b`` log in with the same credentials, not
    counting the tokens that mailpool renews itself (access token, expiry
    and rotated refresh token of an account with a refresh token).

    The pool uses it to tell a person's fix of the credentials from a
    refresh done by the transport during the send.
    """
    if a.smtp != b.smtp:
        return False
    if a.oauth2 is None or b.oauth2 is None:
        return a.oauth2 == b.oauth2
    if a.oauth2.refresh_token is None or b.oauth2.refresh_token is None:
        return a.oauth2 == b.oauth2
    blank = OAuth2Credentials()
    return _with_tokens(a.oauth2, blank) == _with_tokens(b.oauth2, blank)


@dataclass(frozen=True)
class _Cached:
    base: SecretStr | None  # the refresh token the tokens were refreshed from
    tokens: OAuth2Credentials


class TokenKeeper:
    """Renews the access tokens of one transport's accounts and keeps the
    newest ones.

    - :meth:`fresh` renews a token that expires within ``margin`` seconds;
      :meth:`after_refusal` renews one the server refused.
    - Threads of one process never refresh one account together: the
      second waits, then finds the first one's tokens.
    - Before calling the endpoint, the account is read again from the bound
      storages (another process may have refreshed it); new tokens are saved
      only if the stored refresh token is still the one refreshed from. A
      worker that lost that race uses the stored tokens and saves nothing,
      so the newest refresh token is not replaced by an older one. The
      check and the write are one atomic step on a :class:`TokenStore` and
      on :class:`~mailpool.SimpleStorage` backends (the JSON file, under its
      lock); on other storages they are a read and an
      :meth:`~mailpool.Storage.update`, atomic within one process only.
    - Without a storage the newest tokens are kept in memory only.

    .. versionadded:: 0.2
    """

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider
        self._storages: list[Storage] = []
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def bind(self, storage: Storage) -> None:
        """Save refreshed tokens through ``storage`` (idempotent)."""
        with self._lock:
            if not any(bound is storage for bound in self._storages):
                self._storages.append(storage)

    def current(self, account: Account) -> Account:
        """``account`` with the newer tokens this process holds for it, if
        any (no I/O)."""
        oauth = account.oauth2
        with self._lock:
            cached = self._cache.get(account.id)
        if oauth is None or cached is None:
            return account
        tokens = cached.tokens
        if oauth.refresh_token not in (cached.base, tokens.refresh_token):
            return account  # a person stored other credentials since
        if tokens.token_expiry is None or (
            oauth.token_expiry is not None and oauth.token_expiry >= tokens.token_expiry
        ):
            return account
        return _replace_oauth2(account, _with_tokens(oauth, tokens))

    def fresh(self, account: Account, margin: float) -> tuple[Account, bool]:
        """``account`` with an access token valid for more than ``margin``
        seconds when it can be renewed.

        :returns: the account to log in with, and whether a refresh by this
            call produced its token.
        """
        if not _expiring(account, margin):
            return account, False
        with _refresh_lock(account.id):
            latest = self._latest(account)
            if not _expiring(latest, margin):
                return latest, False
            renewed = self._refresh(latest)
        return (latest, False) if renewed is None else (renewed, True)

    def after_refusal(self, account: Account) -> Account | None:
        """Another access token for ``account``, whose token the server just
        refused: one stored since by another worker, else a new one.

        :returns: ``None`` when there is no other token to try.
        """
        refused = account.oauth2.access_token if account.oauth2 else None
        with _refresh_lock(account.id):
            latest = self._latest(account)
            stored = latest.oauth2.access_token if latest.oauth2 else None
            if stored is not None and stored != refused and not _expiring(latest, 0):
                return latest
            return self._refresh(latest)

    # -- under the account's lock ---------------------------------------------

    def _latest(self, account: Account) -> Account:
        """The account's credentials as stored now (or as held here)."""
        for storage in self._bound():
            stored = _load(storage, account)
            if stored is not None:
                if stored.oauth2 is None:
                    return account
                return self.current(_replace_oauth2(account, stored.oauth2))
        return self.current(account)

    def _refresh(self, account: Account) -> Account | None:
        oauth = account.oauth2
        assert oauth is not None
        base = oauth.refresh_token
        failure: str | None = None
        try:
            new = self.provider.refresh(account)
        except AuthenticationError:
            # Refused because another process rotated the token meanwhile?
            latest = self._latest(account)
            now = latest.oauth2
            rotated = now is not None and now.refresh_token != base
            if rotated and not _expiring(latest, 0):
                return latest
            raise
        except MailpoolError:
            raise
        except Exception as exc:
            # A bug in a custom provider: still a SendError, and without the
            # chain, whose frames may hold secrets.
            failure = type(exc).__name__
        if failure is not None:
            raise SendError(
                f"renewing the OAuth2 access token of {account.email} failed "
                f"unexpectedly ({failure} in {self.provider!r})",
                account_id=account.id,
            )
        if new is None:
            return None
        tokens = _with_tokens(oauth, new)
        renewed = _replace_oauth2(account, tokens)
        rotated = tokens.refresh_token != base
        log.info(
            "renewed the OAuth2 access token of %s (valid until %s)%s",
            account.email,
            tokens.token_expiry.isoformat() if tokens.token_expiry else "unknown",
            "; the refresh token was rotated" if rotated else "",
        )
        with self._lock:
            self._cache[account.id] = _Cached(base, tokens)
        saved = False
        for storage in self._bound():
            outcome = _save(storage, account, base, tokens)
            if outcome is None:
                continue
            saved = True
            if outcome is not tokens:
                log.debug(
                    "the stored tokens of %s were renewed by another worker "
                    "meanwhile; using those",
                    account.email,
                )
                with self._lock:
                    self._cache[account.id] = _Cached(base, outcome)
                renewed = _replace_oauth2(account, _with_tokens(oauth, outcome))
            break
        if not saved and rotated and self._bound():
            log.error(
                "the rotated OAuth2 refresh token of %s could not be saved: "
                "it is kept in this process only",
                account.email,
            )
        return renewed

    def _bound(self) -> list[Storage]:
        with self._lock:
            return list(self._storages)


def _expiring(account: Account, margin: float) -> bool:
    """True when the access token is missing, or expires within ``margin``
    seconds, and a refresh token exists."""
    oauth = account.oauth2
    if oauth is None or oauth.refresh_token is None:
        return False
    if oauth.access_token is None:
        return True
    if oauth.token_expiry is None:
        return False
    left = oauth.token_expiry - datetime.now(timezone.utc)
    return left.total_seconds() <= margin


def _replace_oauth2(account: Account, oauth: OAuth2Credentials) -> Account:
    try:
        return account.replace(oauth2=oauth)
    except ConfigurationError as exc:
        raise SendError(
            f"the OAuth2 credentials of {account.email} cannot be used: {exc}",
            account_id=account.id,
        ) from None


def _load(storage: Storage, account: Account) -> Account | None:
    """The stored account, or None when this storage does not hold it."""
    try:
        stored = storage.get(account.id)
    except MailpoolError as exc:  # AccountNotFound included
        log.debug("cannot read %s from %r: %s", account.email, storage, exc)
        return None
    return stored if stored.email == account.email else None


def _decide(
    stored: Account, base: SecretStr | None, tokens: OAuth2Credentials
) -> tuple[OAuth2Credentials | None, OAuth2Credentials]:
    """What to write (None: nothing) and which tokens to use, given the
    stored account and the refresh token the new ``tokens`` came from."""
    oauth = stored.oauth2
    if oauth is None:
        return None, tokens  # a person removed OAuth2 meanwhile
    if oauth.refresh_token == base:
        return _with_tokens(oauth, tokens), tokens
    # Another worker rotated the refresh token, or a person stored a new one:
    # keep it. Its access token is as good as ours when it is still valid.
    usable = oauth.access_token is not None and not _expiring(stored, 0)
    return None, oauth if usable else tokens


def _save(
    storage: Storage,
    account: Account,
    base: SecretStr | None,
    tokens: OAuth2Credentials,
) -> OAuth2Credentials | None:
    """Compare-and-set the stored tokens of ``account``.

    :returns: the tokens to use now, or None when this storage does not
        hold the account or failed.
    """
    try:
        if isinstance(storage, TokenStore):
            after = storage.save_oauth2_tokens(account.id, tokens, replacing=base)
            return _decide(after, base, tokens)[1]
        if isinstance(storage, SimpleStorage):
            with storage.locked_write() as accounts:
                stored = accounts.get(account.id)
                if stored is None or stored.email != account.email:
                    return None
                write, use = _decide(stored, base, tokens)
                if write is not None:
                    accounts[account.id] = stored.replace(oauth2=write)
            return use
        stored = storage.get(account.id)
        if stored.email != account.email:
            return None
        write, use = _decide(stored, base, tokens)
        if write is not None:
            storage.update(stored.replace(oauth2=write))
        return use
    except AccountNotFound:
        return None
    except MailpoolError as exc:
        log.error(
            "cannot save the renewed OAuth2 tokens of %s to %r: %s",
            account.email,
            storage,
            exc,
        )
        return None
