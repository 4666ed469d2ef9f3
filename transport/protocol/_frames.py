"""Framing: a 4-byte big-endian length, then that many bytes of one JSON object."""

from __future__ import annotations

import struct
from typing import Any

import orjson

from transport.protocol._errors import FrameTooLarge

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024


def encode_wire_frame(obj: Any) -> bytes:
    body = orjson.dumps(obj)
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Split a byte stream into frame bodies.

    The length prefix is checked before any body byte is buffered, so a peer
    announcing 4 GiB costs nothing: :meth:`feed` raises :class:`FrameTooLarge` and
    the decoder stays broken (every later call raises again).
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._broken: FrameTooLarge | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held back (non-zero at EOF = truncated)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self._broken is not None:
            raise self._broken
        self._buffer += data
        frames: list[bytes] = []
        offset = 0
        buf = self._buffer
        while len(buf) - offset >= HEADER.size:
            (length,) = HEADER.unpack_from(buf, offset)
            if length > self.max_frame_bytes:
                del self._buffer[:]
                self._broken = FrameTooLarge(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
                )
                raise self._broken
            end = offset + HEADER.size + length
            if end > len(buf):
                break
            frames.append(bytes(buf[offset + HEADER.size : end]))
            offset = end
        if offset:
            del self._buffer[:offset]
        return frames
