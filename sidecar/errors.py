"""Error types shared by the queue core and everything above it.

Every error carries a stable ``code`` that the wire protocol (SPEC §5.3) sends as is,
so a caller on the other side of an SSH channel sees the same classification as a
caller of the Python API.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNKNOWN_KIND = "unknown_kind"
    TOO_LARGE = "too_large"
    QUEUE_FULL = "queue_full"
    FORBIDDEN = "forbidden"
    TIER_REQUIRED = "tier_required"
    NOT_FOUND = "not_found"
    ALREADY_CONSUMED = "already_consumed"
    LEASE_EXPIRED = "lease_expired"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class SidecarError(Exception):
    """Base of every error the product reports to a caller."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}


class InvalidMessage(SidecarError):
    """Missing, extra or mistyped fields; the queue is unchanged."""

    code = ErrorCode.BAD_REQUEST


class UnknownKind(InvalidMessage):
    code = ErrorCode.UNKNOWN_KIND


class MessageTooLarge(InvalidMessage):
    code = ErrorCode.TOO_LARGE


class QueueFull(SidecarError):
    code = ErrorCode.QUEUE_FULL


class NotFound(SidecarError):
    code = ErrorCode.NOT_FOUND


class AlreadyConsumed(SidecarError):
    code = ErrorCode.ALREADY_CONSUMED


class LeaseExpired(SidecarError):
    code = ErrorCode.LEASE_EXPIRED


class Forbidden(SidecarError):
    code = ErrorCode.FORBIDDEN


class TierRequired(SidecarError):
    code = ErrorCode.TIER_REQUIRED


class Unavailable(SidecarError):
    """The service cannot take work now (closed, or stopped after a fatal log error)."""

    code = ErrorCode.UNAVAILABLE


class LogFailed(Unavailable):
    """A write or fsync of the log failed.

    After a failed fsync the queue is stopped for good (fsyncgate: the kernel may
    have dropped the dirty pages, so retrying could report success for lost data).
    Restart recovers from what is on disk.
    """


class AsyncMessagesLost(LogFailed):
    """Graceful shutdown could not write the async messages it still held (the disk
    stayed full, or an fsync failed): ``lost`` of them are gone."""

    def __init__(self, message: str, lost: int) -> None:
        super().__init__(message)
        self.lost = lost


class LogCorrupt(Unavailable):
    """The log is damaged in the middle: valid records follow a bad one.

    Raised by open/recovery; nothing is changed on disk. The operator decides whether to
    salvage (keep every valid record, set the damaged file aside).
    """

    def __init__(
        self, message: str, *, path: str, offset: int, next_valid_offset: int | None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset
        self.next_valid_offset = next_valid_offset
