"""What an SMTP reply means for the message and for the account that sent it.

A reply is read whole: its code, its enhanced status code (RFC 3463), its
text, and the stage of the session it answered (connect, EHLO, STARTTLS, AUTH,
MAIL, RCPT, DATA, end of data). :class:`ReplyRules` maps it to one
:class:`ReplyClass`, which decides what the pool does:

=========================  ==================================================
class                      what happens
=========================  ==================================================
``recipient``              that recipient is refused; no failover
``too_many_recipients``    the recipient goes in a further transaction
``message``                the message is refused; no failover
``account_quota``          the account is held at its cap until its next
                           daily reset; failover
``account_throttled``      the account cools down (stored); failover
``account_broken``         the account gets status ``error``; failover
``transient``              retried on the account, then failover
=========================  ==================================================

The rules are ordered and the first that matches wins. The defaults
(:data:`DEFAULT_RULES`) come from real servers' replies, each with its
source (docs/replies.md lists them); pass your own rules first to extend or
override them::

    from mailpool import SMTPTransport
    from mailpool.replies import ReplyClass, ReplyRule, ReplyRules

    rules = ReplyRules(
        [ReplyRule(ReplyClass.ACCOUNT_THROTTLED, code=550, text="rate limited")]
    )
    transport = SMTPTransport(replies=rules)

.. versionadded:: 0.2
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_REPLIES",
    "DEFAULT_RULES",
    "Reply",
    "ReplyClass",
    "ReplyRule",
    "ReplyRules",
    "Stage",
]


class Stage(str, enum.Enum):
    """The point of an SMTP session a reply answered."""

    CONNECT = "connect"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    """The reply to the ``DATA`` command itself (before the message)."""
    END_OF_DATA = "end_of_data"
    """The reply to the message content (after the final ``.``)."""


class ReplyClass(str, enum.Enum):
    """What a reply means; see the module docstring for what the pool does."""

    RECIPIENT = "recipient"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    MESSAGE = "message"
    ACCOUNT_QUOTA = "account_quota"
    ACCOUNT_THROTTLED = "account_throttled"
    ACCOUNT_BROKEN = "account_broken"
    TRANSIENT = "transient"


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply and the stage it answered.

    :param code: the three-digit reply code.
    :param text: the reply's text (the enhanced status code included, if any).
    :param stage: the command or point of the session it answered.
    """

    code: int
    text: str
    stage: Stage

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code at the start of the text (``"5.7.1"``),
        or None when the server sent none."""
        found = _ENHANCED.match(self.text)
        return None if found is None else ".".join(found.groups())

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


@dataclass(frozen=True)
class ReplyRule:
    """A reply pattern and the class it means. Every condition given must
    match; a rule with none matches every reply.

    :param result: the class of a reply this rule matches.
    :param code: the reply code, or a tuple of codes; ``"4xx"``/``"5xx"``
        match a whole family.
    :param enhanced: an enhanced status code (``"5.7.1"``) or a prefix
        ending in a dot (``"5.1."``).
    :param text: a regular expression searched in the text, ignoring case.
    :param stages: the stages it applies to (all when empty).
    :param source: where the reply was seen, for docs/replies.md.
    :param example: the reply as a server sends it.
    """

    result: ReplyClass
    code: int | str | tuple[int, ...] | None = None
    enhanced: str | None = None
    text: str | None = None
    stages: frozenset[Stage] = frozenset()
    source: str = ""
    example: str = ""
    _pattern: re.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        pattern = None if self.text is None else re.compile(self.text, re.IGNORECASE)
        object.__setattr__(self, "_pattern", pattern)
        object.__setattr__(self, "stages", frozenset(self.stages))

    def matches(self, reply: Reply) -> bool:
        """True when ``reply`` meets every condition of this rule."""
        if self.stages and reply.stage not in self.stages:
            return False
        if not _code_matches(self.code, reply.code):
            return False
        if self.enhanced is not None:
            found = reply.enhanced
            if found is None:
                return False
            if self.enhanced.endswith("."):
                if not found.startswith(self.enhanced):
                    return False
            elif found != self.enhanced:
                return False
        return self._pattern is None or self._pattern.search(reply.text) is not None


def _code_matches(wanted: int | str | tuple[int, ...] | None, code: int) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, tuple):
        return code in wanted
    if isinstance(wanted, str):
        return str(code)[0] == wanted[0] and wanted[1:].lower() == "xx"
    return code == wanted


_SENDING = frozenset({Stage.MAIL, Stage.RCPT, Stage.DATA, Stage.END_OF_DATA})
_SESSION = frozenset({Stage.CONNECT, Stage.EHLO, Stage.STARTTLS})
_CONTENT = frozenset({Stage.DATA, Stage.END_OF_DATA})
_R = ReplyClass

DEFAULT_RULES: tuple[ReplyRule, ...] = (
    # -- the account's quota at the provider --------------------------------
    ReplyRule(
        _R.ACCOUNT_QUOTA,
        text=r"daily user sending (quota|limit) exceeded",
        stages=_SENDING,
        source="Gmail (support.google.com/a/answer/3726730)",
        example="550 5.4.5 Daily user sending quota exceeded.",
    ),
    ReplyRule(
        _R.ACCOUNT_QUOTA,
        text=r"daily smtp relay limit exceeded",
        stages=_SENDING,
        source="Google Workspace SMTP relay (support.google.com/a/answer/3221692)",
        example="550 5.4.5 Daily SMTP relay limit exceeded for user.",
    ),
    ReplyRule(
        _R.ACCOUNT_QUOTA,
        text=r"SubmissionQuotaExceeded",
        stages=_SENDING,
        source="Microsoft 365 / Outlook.com (learn.microsoft.com, Exchange "
        "Online sending limits)",
        example="554 5.2.0 STOREDRV.Submission.Exception:"
        "SubmissionQuotaExceededException",
    ),
    # -- the account is throttled for now -----------------------------------
    ReplyRule(
        _R.ACCOUNT_THROTTLED,
        code=432,
        enhanced="4.3.2",
        source="Microsoft 365 (sender thread limit, Exchange Online)",
        example="432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
    ),
    ReplyRule(
        _R.ACCOUNT_THROTTLED,
        code=421,
        enhanced="4.7.0",
        source="Gmail (support.google.com/a/answer/3726730)",
        example="421 4.7.0 Try again later, closing connection.",
    ),
    ReplyRule(
        _R.ACCOUNT_THROTTLED,
        code=450,
        enhanced="4.7.1",
        source="Postfix smtpd rate/policy limits (postfix.org/postconf.5.html)",
        example="450 4.7.1 Error: too much mail from 192.0.2.1",
    ),
    ReplyRule(
        _R.ACCOUNT_THROTTLED,
        code=454,
        enhanced="4.7.0",
        text=r"too many login attempts",
        source="Gmail (support.google.com/a/answer/3726730)",
        example="454 4.7.0 Too many login attempts, please try again later.",
    ),
    # -- the account cannot send as configured ------------------------------
    ReplyRule(
        _R.ACCOUNT_BROKEN,
        code=(530, 534, 535),
        source="RFC 4954 (AUTH); Gmail 534 5.7.9 application-specific "
        "password required, 535 5.7.8 credentials not accepted",
        example="535 5.7.8 Username and Password not accepted.",
    ),
    ReplyRule(
        _R.ACCOUNT_BROKEN,
        enhanced="5.7.30",
        source="Microsoft 365 (basic authentication disabled)",
        example="550 5.7.30 Basic authentication is not supported for Client "
        "Submission.",
    ),
    ReplyRule(
        _R.ACCOUNT_BROKEN,
        enhanced="5.7.",
        text=r"client host rejected|relay access denied|relaying denied|"
        r"not owned by|sender address rejected|not permitted to relay|"
        r"authentication required|send ?as|does not have permissions to send",
        stages=_SENDING,
        source="Postfix (smtpd_recipient_restrictions, "
        "reject_sender_login_mismatch); Microsoft 550 5.7.60 send-as denied",
        example="553 5.7.1 <a@example.com>: Sender address rejected: not owned "
        "by user b@example.com",
    ),
    ReplyRule(
        _R.ACCOUNT_BROKEN,
        enhanced="5.2.252",
        source="Microsoft 365 (SendAsDenied)",
        example="554 5.2.252 SendAsDenied; a@example.com not allowed to send "
        "as b@example.com",
    ),
    # -- recipients -----------------------------------------------------------
    ReplyRule(
        _R.TOO_MANY_RECIPIENTS,
        code=452,
        enhanced="4.5.3",
        stages=frozenset({Stage.RCPT}),
        source="Gmail; Postfix smtpd_recipient_limit; RFC 5321 4.5.3.1.10",
        example="452 4.5.3 Your message has too many recipients.",
    ),
    ReplyRule(
        _R.TOO_MANY_RECIPIENTS,
        code=452,
        text=r"too many recipients",
        stages=frozenset({Stage.RCPT}),
        source="RFC 5321 4.5.3.1.10",
        example="452 Too many recipients",
    ),
    ReplyRule(
        _R.RECIPIENT,
        code="5xx",
        enhanced="5.1.",
        stages=frozenset({Stage.RCPT}),
        source="RFC 3463 (X.1.x: addressing)",
        example="550 5.1.1 <nobody@example.com>: Recipient address rejected",
    ),
    # -- the message itself ---------------------------------------------------
    ReplyRule(
        _R.MESSAGE,
        code="5xx",
        enhanced="5.3.4",
        source="Postfix message_size_limit; RFC 3463",
        example="552 5.3.4 Message size exceeds fixed limit",
    ),
    ReplyRule(
        _R.MESSAGE,
        code="5xx",
        enhanced="5.6.",
        source="RFC 3463 (X.6.x: content); Gmail 552 5.6.0 headers too large",
        example="554 5.6.0 Message rejected: malformed content",
    ),
    ReplyRule(
        _R.MESSAGE,
        code=552,
        stages=frozenset({Stage.MAIL, *_CONTENT}),
        source="RFC 1870 (SIZE) and RFC 5321 (552 storage exceeded)",
        example="552 Message size exceeds maximum permitted",
    ),
    ReplyRule(
        _R.MESSAGE,
        code="5xx",
        enhanced="5.7.",
        stages=_CONTENT,
        source="Gmail 550 5.7.1 unsolicited mail; content filters (Amavis, rspamd)",
        example="550 5.7.1 Message rejected as spam by Content Filtering.",
    ),
    # -- fallbacks by code and stage -----------------------------------------
    ReplyRule(_R.TRANSIENT, code="4xx", source="RFC 5321 (4yz: transient)"),
    ReplyRule(
        _R.RECIPIENT,
        code="5xx",
        stages=frozenset({Stage.RCPT}),
        source="RFC 5321 (5yz on RCPT)",
    ),
    ReplyRule(
        _R.MESSAGE,
        code="5xx",
        stages=_CONTENT,
        source="RFC 5321 (5yz on DATA)",
    ),
    ReplyRule(
        _R.ACCOUNT_BROKEN,
        code="5xx",
        stages=frozenset({Stage.MAIL, Stage.AUTH, *_SESSION}),
        source="RFC 5321 (5yz on MAIL or before it: the sender or the "
        "session is refused)",
    ),
)
"""The built-in rules, in the order they are tried."""


class ReplyRules:
    """Classifies replies by ordered rules; the first that matches wins.

    :param rules: tried before the defaults (so they extend or override them).
    :param defaults: also try :data:`DEFAULT_RULES` after ``rules``.

    A reply no rule matches is ``transient`` when it is a 4xx and
    ``account_broken`` otherwise.

    .. versionadded:: 0.2
    """

    def __init__(
        self, rules: Iterable[ReplyRule] = (), *, defaults: bool = True
    ) -> None:
        self.rules: tuple[ReplyRule, ...] = tuple(rules) + (
            DEFAULT_RULES if defaults else ()
        )

    def __repr__(self) -> str:
        return f"<ReplyRules: {len(self.rules)} rules>"

    def classify(self, reply: Reply, /) -> ReplyClass:
        """The class of ``reply``."""
        rule = self.rule_for(reply)
        if rule is not None:
            return rule.result
        return ReplyClass.TRANSIENT if 400 <= reply.code < 500 else _R.ACCOUNT_BROKEN

    def rule_for(self, reply: Reply, /) -> ReplyRule | None:
        """The first rule that matches ``reply``, or None."""
        return next((rule for rule in self.rules if rule.matches(reply)), None)

    def known(self) -> Sequence[ReplyRule]:
        """The rules with an example reply (the table of docs/replies.md)."""
        return [rule for rule in self.rules if rule.example]


DEFAULT_REPLIES = ReplyRules()
"""The rules :class:`~mailpool.SMTPTransport` uses unless given others."""
