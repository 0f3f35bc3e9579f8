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
    AccountBroken,
    AccountError,
    AccountQuotaExceeded,
    AccountThrottled,
    AuthenticationError,
    ConnectFailure,
    DeliveryUnknown,
    MessageRejected,
    SendError,
    TemporarySendError,
)
from mailpool.models import Account
from mailpool.replies import DEFAULT_REPLIES, Reply, ReplyClass, ReplyRules, Stage
from mailpool.transport._client import Client

__all__ = ["login_name", "map_errors", "reply_of", "scrubbed", "stage_of", "text_of"]


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


_ACCOUNT_ERRORS: dict[ReplyClass, type[AccountError]] = {
    ReplyClass.ACCOUNT_BROKEN: AccountBroken,
    ReplyClass.ACCOUNT_QUOTA: AccountQuotaExceeded,
    ReplyClass.ACCOUNT_THROTTLED: AccountThrottled,
}
_CONTENT = (Stage.DATA, Stage.END_OF_DATA)
_MEANING = {
    ReplyClass.ACCOUNT_BROKEN: "the account cannot send as configured",
    ReplyClass.ACCOUNT_QUOTA: "the account reached its sending quota at the provider",
    ReplyClass.ACCOUNT_THROTTLED: "the provider is throttling the account",
}


def reply_of(exc: smtplib.SMTPResponseException, connection: Client | None) -> Reply:
    """The reply behind ``exc`` and the stage it answered."""
    text = exc.smtp_error
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return Reply(exc.smtp_code, str(text), stage_of(exc, connection))


def stage_of(exc: smtplib.SMTPResponseException, connection: Client | None) -> Stage:
    """The stage of the session that ``exc`` answered."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return Stage.AUTH
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return Stage.MAIL
    if isinstance(exc, smtplib.SMTPConnectError):
        return Stage.CONNECT
    if isinstance(exc, smtplib.SMTPHeloError):
        return Stage.EHLO
    if connection is None:
        return Stage.CONNECT
    if isinstance(exc, smtplib.SMTPDataError) or connection.stage is Stage.DATA:
        return Stage.END_OF_DATA if connection.body_sent else Stage.DATA
    return connection.stage


def _account_error(
    kind: ReplyClass, account: Account, server: str, reply: Reply, what: str
) -> AccountError:
    error = _ACCOUNT_ERRORS[kind]
    if error is AccountBroken and (
        reply.stage is Stage.AUTH or reply.code in (530, 534, 535)
    ):
        return _auth_error(account, server, reply)
    return error(
        f"{server} refused {what} from {account.email} ({reply}): {_MEANING[kind]}",
        smtp_code=reply.code,
        account_id=account.id,
        reply_class=kind.value,
    )


def _auth_error(account: Account, server: str, reply: Reply) -> AuthenticationError:
    text = str(reply)
    xoauth2 = account.oauth2 is not None and account.oauth2.access_token
    if not xoauth2 and _basic_auth_off(text):
        # Microsoft 365 without basic authentication (550 5.7.30,
        # 535 5.7.139): only OAuth2 logs in (issue 10).
        message = (
            f"{server} refused the password login of {login_name(account)} "
            f"({text}): the provider requires OAuth2 for this account; "
            "store OAuth2 credentials with a refresh token (see "
            "docs/oauth2.md) and set the account active"
        )
    elif reply.stage is Stage.AUTH:
        message = f"{server} refused the login of {login_name(account)}: {text}"
    else:
        message = (
            f"{server} requires a login that {account.email} did not give "
            f"or was refused: {text}"
        )
    return AuthenticationError(
        message,
        smtp_code=reply.code,
        account_id=account.id,
        reply_class=ReplyClass.ACCOUNT_BROKEN.value,
    )


def _recipients_error(
    exc: smtplib.SMTPRecipientsRefused, account: Account, server: str, rules: ReplyRules
) -> SendError:
    """Every recipient was refused: the worst meaning decides."""
    replies = {
        address: Reply(code, text_of(text), Stage.RCPT)
        for address, (code, text) in exc.recipients.items()
    }
    kinds = {address: rules.classify(reply) for address, reply in replies.items()}
    details = "; ".join(f"{address}: {reply}" for address, reply in replies.items())
    for kind in _ACCOUNT_ERRORS:  # about the account: failover
        for address, found in kinds.items():
            if found is kind:
                return _account_error(
                    kind, account, server, replies[address], "the recipients"
                )
    codes = [reply.code for reply in replies.values()]
    final = (ReplyClass.RECIPIENT, ReplyClass.MESSAGE)
    if all(kind in final for kind in kinds.values()):
        return MessageRejected(
            f"{server} refused every recipient for good: {details}",
            recipients=exc.recipients,
            smtp_code=max(codes),
            account_id=account.id,
            reply_class=ReplyClass.RECIPIENT.value,
        )
    return TemporarySendError(
        f"{server} refused every recipient, some only for now: {details}",
        smtp_code=codes[0],
        account_id=account.id,
        reply_class=ReplyClass.TRANSIENT.value,
    )


def text_of(text: bytes | str) -> str:
    """A reply's text as ``str``."""
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def _reply_error(
    exc: smtplib.SMTPResponseException,
    account: Account,
    connection: Client | None,
    server: str,
    rules: ReplyRules,
) -> SendError:
    reply = reply_of(exc, connection)
    kind = rules.classify(reply)
    what = {
        Stage.MAIL: "the sender",
        Stage.RCPT: "the recipients",
        Stage.DATA: "the message",
        Stage.END_OF_DATA: "the message",
        Stage.AUTH: "the login",
    }.get(reply.stage, "the session")
    if kind in _ACCOUNT_ERRORS:
        return _account_error(kind, account, server, reply, what)
    if kind in (ReplyClass.RECIPIENT, ReplyClass.MESSAGE):
        return MessageRejected(
            f"{server} refused the message: {reply}",
            smtp_code=reply.code,
            account_id=account.id,
            reply_class=kind.value,
        )
    text = (
        f"{server} deferred the message: {reply}"
        if reply.stage in _CONTENT
        else f"{server} answered {reply}"
    )
    return TemporarySendError(
        text,
        smtp_code=reply.code,
        account_id=account.id,
        reply_class=ReplyClass.TRANSIENT.value,
    )


@contextlib.contextmanager
def map_errors(
    account: Account,
    connection: Client | None = None,
    rules: ReplyRules = DEFAULT_REPLIES,
) -> Iterator[None]:
    """Turn smtplib, ssl and socket errors into mailpool's SendError tree;
    SMTP replies are classified by ``rules``."""
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
    except smtplib.SMTPRecipientsRefused as exc:
        raise _recipients_error(exc, account, server, rules) from exc
    except smtplib.SMTPResponseException as exc:
        raise _reply_error(exc, account, connection, server, rules) from exc
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
