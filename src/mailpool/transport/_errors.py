"""smtplib's errors mapped onto mailpool's error tree: the only place that does.

The mapped error keeps its cause (the server's reply, the socket error) as a
fresh exception without a traceback: the frames of a failed login hold the
password in their locals, and error trackers record locals by default.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Iterator

from mailpool.errors import (
    AuthenticationError,
    ConnectFailure,
    DeliveryUnknown,
    MessageRejected,
    SendError,
    TemporarySendError,
)
from mailpool.models import Account
from mailpool.transport._client import Client

__all__ = ["login_name", "map_errors", "scrubbed"]


def login_name(account: Account) -> str | None:
    """Who the account logs in as, or None when it has no credentials."""
    settings = account.smtp
    oauth2 = account.oauth2
    has_token = oauth2 is not None and (
        oauth2.access_token is not None or oauth2.refresh_token is not None
    )
    if settings.password is None and not has_token:
        return None
    return settings.username or account.email


@contextlib.contextmanager
def scrubbed() -> Iterator[None]:
    """Let a :class:`SendError` out with a traceback-free cause and no context."""
    try:
        yield
    except SendError as error:
        cause = error.__cause__
        error.__cause__ = None if cause is None else _bare(cause)
        error.__context__ = None
        error.__suppress_context__ = True
        raise


def _bare(error: BaseException) -> BaseException:
    """A copy of ``error`` without traceback, context or (for encoding errors,
    which hold the text they failed on) its arguments."""
    if isinstance(error, UnicodeError):
        return UnicodeError(type(error).__name__)
    try:
        copy = type(error)(*error.args)
    except Exception:  # an exception class with another signature
        copy = Exception(str(error))
    copy.__cause__ = copy.__context__ = None
    return copy


def _basic_auth_off(reply: str) -> bool:
    """True for a refusal that says password logins are turned off."""
    text = reply.lower()
    return "5.7.30" in text or ("5.7.139" in text and "basic auth" in text)


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


@contextlib.contextmanager
def map_errors(account: Account, connection: Client | None = None) -> Iterator[None]:
    """Turn smtplib, ssl and socket errors into mailpool's SendError tree."""
    server = f"{account.smtp.host}:{account.smtp.port}"
    aid = account.id
    try:
        try:
            yield
        except OSError as exc:  # smtplib's errors are OSErrors too
            lost_reply = not isinstance(exc, smtplib.SMTPResponseException)
            if connection is not None and connection.body_sent and lost_reply:
                raise DeliveryUnknown(
                    f"{server} received the message but its reply was lost "
                    f"({exc}): it may have been delivered, so it counts and is "
                    "not sent again",
                    account_id=aid,
                ) from exc
            raise
    except SendError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
        xoauth2 = account.oauth2 is not None and account.oauth2.access_token
        if not xoauth2 and _basic_auth_off(reply):
            # Microsoft 365 without basic authentication (550 5.7.30,
            # 535 5.7.139): only OAuth2 logs in (issue 10).
            raise AuthenticationError(
                f"{server} refused the password login of {login_name(account)} "
                f"({reply}): the provider requires OAuth2 for this account; "
                "store OAuth2 credentials with a refresh token (see "
                "docs/oauth2.md) and set the account active",
                smtp_code=exc.smtp_code,
                account_id=aid,
            ) from exc
        raise AuthenticationError(
            f"{server} refused the login of {login_name(account)}: "
            f"{_reply(exc.smtp_code, exc.smtp_error)}",
            smtp_code=exc.smtp_code,
            account_id=aid,
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        details = "; ".join(
            f"{address}: {_reply(code, text)}"
            for address, (code, text) in exc.recipients.items()
        )
        if any(400 <= code < 500 for code in codes):
            raise TemporarySendError(
                f"{server} refused every recipient, some only for now: {details}",
                smtp_code=codes[0],
                account_id=aid,
            ) from exc
        raise MessageRejected(
            f"{server} refused every recipient for good: {details}",
            recipients=exc.recipients,
            smtp_code=max(codes),
            account_id=aid,
        ) from exc
    except smtplib.SMTPDataError as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
        if 400 <= exc.smtp_code < 500:
            raise TemporarySendError(
                f"{server} deferred the message: {reply}",
                smtp_code=exc.smtp_code,
                account_id=aid,
            ) from exc
        raise MessageRejected(
            f"{server} refused the message: {reply}",
            smtp_code=exc.smtp_code,
            account_id=aid,
        ) from exc
    except smtplib.SMTPResponseException as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
        if exc.smtp_code in (530, 534, 535):
            raise AuthenticationError(
                f"{server} requires a login that {account.email} did not give "
                f"or was refused: {reply}",
                smtp_code=exc.smtp_code,
                account_id=aid,
            ) from exc
        if 400 <= exc.smtp_code < 500:
            raise TemporarySendError(
                f"{server} answered {reply}", smtp_code=exc.smtp_code, account_id=aid
            ) from exc
        raise SendError(
            f"{server} answered {reply}", smtp_code=exc.smtp_code, account_id=aid
        ) from exc
    except smtplib.SMTPServerDisconnected as exc:
        # smtplib reports a read timeout as a disconnect.
        what = (
            "did not answer in time"
            if "timed out" in str(exc) or "deadline" in str(exc)
            else ("closed the connection unexpectedly")
        )
        raise ConnectFailure(f"{server} {what}", account_id=aid) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise SendError(
            f"{server} does not support what is needed: {exc}", account_id=aid
        ) from exc
    except smtplib.SMTPException as exc:
        raise SendError(f"SMTP error with {server}: {exc}", account_id=aid) from exc
    except ssl.SSLCertVerificationError as exc:
        raise SendError(
            f"the TLS certificate of {server} could not be verified "
            f"({exc.verify_message}): for a private CA pass "
            "SMTPTransport(ssl_context=...) that trusts it",
            account_id=aid,
        ) from exc
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
        raise ConnectFailure(
            f"{server} closed the connection during the TLS handshake",
            account_id=aid,
        ) from exc
    except ssl.SSLError as exc:
        raise SendError(
            f"TLS with {server} failed ({exc.reason}): check that use_ssl is set "
            "for implicit TLS ports (465) and use_tls for STARTTLS ports (587)",
            account_id=aid,
        ) from exc
    except UnicodeError as exc:
        # Validation keeps non-ASCII out of the envelope; whatever else could
        # not be encoded is named without its text (it may be a secret).
        raise SendError(
            f"a value sent to {server} could not be encoded ({type(exc).__name__})",
            account_id=aid,
        ) from None
    except TimeoutError as exc:
        raise ConnectFailure(
            f"{server} did not answer in time", account_id=aid
        ) from exc
    except OSError as exc:
        raise ConnectFailure(f"cannot reach {server}: {exc}", account_id=aid) from exc
