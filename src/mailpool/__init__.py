"""mailpool: send email through a pool of sender accounts.

Each account has its own SMTP or OAuth2 credentials, a daily limit, a minimum
wait between sends and a status. :class:`AccountPool` picks an eligible
account (randomly by default), reserves a unit of its quota atomically, sends
with retries, and fails over to another account when one fails.
"""

from __future__ import annotations

from mailpool._retry import RetryPolicy
from mailpool.errors import (
    AccountBroken,
    AccountError,
    AccountNotFound,
    AccountQuotaExceeded,
    AccountThrottled,
    AuthenticationError,
    ConfigurationError,
    ConnectFailure,
    DeliveryUnknown,
    MailpoolError,
    MessageRejected,
    NoAccountAvailable,
    NoAccountReason,
    SendError,
    StorageError,
    TemporarySendError,
)
from mailpool.health import HealthPolicy
from mailpool.models import (
    Account,
    AccountExplanation,
    AccountStatus,
    AccountUsage,
    ConnectionTestResult,
    Failure,
    FailureKind,
    OAuth2Credentials,
    PauseKind,
    SendResult,
    SMTPSettings,
)
from mailpool.pool import AccountPool
from mailpool.providers import PROVIDERS, ConnectionType, ProviderPreset
from mailpool.replies import ReplyRules
from mailpool.selection import (
    LeastUsedSelector,
    RandomSelector,
    RoundRobinSelector,
    Selector,
    SelectorLike,
)
from mailpool.storage import (
    Claim,
    InMemoryStorage,
    JSONStorage,
    Lease,
    RecordsFailures,
    Scope,
    SimpleStorage,
    SQLStorage,
    Storage,
    Strategy,
    open_storage,
)
from mailpool.transport import SMTPTransport, Transport

__version__ = "0.1.0"

__all__ = [
    "PROVIDERS",
    "Account",
    "AccountBroken",
    "AccountError",
    "AccountExplanation",
    "AccountNotFound",
    "AccountPool",
    "AccountQuotaExceeded",
    "AccountStatus",
    "AccountThrottled",
    "AccountUsage",
    "AuthenticationError",
    "Claim",
    "ConfigurationError",
    "ConnectFailure",
    "ConnectionTestResult",
    "ConnectionType",
    "DeliveryUnknown",
    "Failure",
    "FailureKind",
    "HealthPolicy",
    "InMemoryStorage",
    "JSONStorage",
    "Lease",
    "LeastUsedSelector",
    "MailpoolError",
    "MessageRejected",
    "NoAccountAvailable",
    "NoAccountReason",
    "OAuth2Credentials",
    "PauseKind",
    "ProviderPreset",
    "RandomSelector",
    "RecordsFailures",
    "ReplyRules",
    "RetryPolicy",
    "RoundRobinSelector",
    "SMTPSettings",
    "SMTPTransport",
    "SQLStorage",
    "Scope",
    "Selector",
    "SelectorLike",
    "SendError",
    "SendResult",
    "SimpleStorage",
    "Storage",
    "StorageError",
    "Strategy",
    "TemporarySendError",
    "Transport",
    "__version__",
    "open_storage",
]
