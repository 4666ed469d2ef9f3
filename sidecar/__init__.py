"""qssh-sidecar queue core and daemon.

The public queue API: everything the service, the daemon and the node endpoint call.
"""

from sidecar.dedup import DedupLimits, Submitted
from sidecar.errors import (
    AlreadyConsumed,
    ErrorCode,
    InvalidMessage,
    LeaseExpired,
    LogCorrupt,
    LogFailed,
    MessageTooLarge,
    NotFound,
    QueueFull,
    SidecarError,
    Unavailable,
    UnknownKind,
)
from sidecar.handles import Consumed, NoClone, Persisted, Queued, TypeStateMessage
from sidecar.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Kind,
    Mode,
    Priority,
    QueueMessage,
    QueueMessageWithProvenance,
)
from sidecar.observer import QueueObserver
from sidecar.queue import QppAsyncSubmit, QppSyncSubmit, QppValidatorQueue
from sidecar.state import Lease, QueueLimits

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "AlreadyConsumed",
    "Consumed",
    "DedupLimits",
    "ErrorCode",
    "InvalidMessage",
    "Kind",
    "Lease",
    "LeaseExpired",
    "LogCorrupt",
    "LogFailed",
    "MessageTooLarge",
    "Mode",
    "NoClone",
    "NotFound",
    "Persisted",
    "Priority",
    "QppAsyncSubmit",
    "QppSyncSubmit",
    "QppValidatorQueue",
    "QueueFull",
    "QueueLimits",
    "QueueMessage",
    "QueueMessageWithProvenance",
    "QueueObserver",
    "Queued",
    "SidecarError",
    "Submitted",
    "TypeStateMessage",
    "Unavailable",
    "UnknownKind",
]
