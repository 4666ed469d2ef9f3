"""qssh-sidecar queue core and daemon.

The public queue API: everything the service, the daemon and the node endpoint call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

# Where each re-export lives. Loaded on first use (PEP 562), so importing one light
# module (``sidecar.errors``, ``sidecar.messages``) does not load the queue and its log.
_HOMES = {
    "sidecar.dedup": ("DedupLimits", "Submitted"),
    "sidecar.errors": (
        "AlreadyConsumed", "ErrorCode", "InvalidMessage", "LeaseExpired", "LogCorrupt",
        "LogFailed", "MessageTooLarge", "NotFound", "QueueFull", "SidecarError",
        "Unavailable", "UnknownKind",
    ),
    "sidecar.handles": ("Consumed", "NoClone", "Persisted", "Queued", "TypeStateMessage"),
    "sidecar.messages": (
        "DEFAULT_MAX_MESSAGE_BYTES", "Kind", "Mode", "Priority", "QueueMessage",
        "QueueMessageWithProvenance",
    ),
    "sidecar.observer": ("QueueObserver",),
    "sidecar.queue": ("QppAsyncSubmit", "QppSyncSubmit", "QppValidatorQueue"),
    "sidecar.state": ("Lease", "QueueLimits"),
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> object:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'sidecar' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME_OF})


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
