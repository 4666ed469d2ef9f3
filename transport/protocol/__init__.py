"""The ``qssh-queue`` wire protocol, with no I/O (SPEC §5.3).

Bytes in, requests out; replies in, bytes out. The SSH session feeds received bytes
to a :class:`FrameDecoder`, turns each frame into a :class:`Request` with
:func:`parse_request`, and writes what :func:`encode_result`, :func:`encode_error` and
:func:`encode_event` return. See ``docs/protocol.md`` for the format.
"""

from transport.protocol._errors import FrameTooLarge, ProtocolError
from transport.protocol._events import EventName
from transport.protocol._frames import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    FrameDecoder,
    encode_wire_frame,
)
from transport.protocol._messages import (
    Event,
    Reply,
    Request,
    RequestId,
    encode_error,
    encode_event,
    encode_request,
    encode_result,
    parse_reply,
    parse_request,
)
from transport.protocol._params import Params

DEFAULT_PORT = 22222  # the queue service's SSH port, server and client alike

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_PORT",
    "HEADER",
    "Event",
    "EventName",
    "FrameDecoder",
    "FrameTooLarge",
    "Params",
    "ProtocolError",
    "Reply",
    "Request",
    "RequestId",
    "encode_error",
    "encode_event",
    "encode_request",
    "encode_result",
    "encode_wire_frame",
    "parse_reply",
    "parse_request",
]
