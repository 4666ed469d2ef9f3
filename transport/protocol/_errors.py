"""The two ways a peer can break the protocol."""

from __future__ import annotations

from sidecar.errors import ErrorCode, SidecarError


class ProtocolError(SidecarError):
    """A frame that is not a valid request or reply; the channel can go on.

    ``request_id`` is the id of the offending request when it could be read, so the
    error reply reaches the caller that sent it.
    """

    code = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, request_id: int | str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class FrameTooLarge(SidecarError):
    """A length prefix over the limit; the stream cannot be resynchronised, so the
    channel is closed after the error reply."""

    code = ErrorCode.TOO_LARGE
