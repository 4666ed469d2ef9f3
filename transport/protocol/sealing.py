"""Tier-4 frame sealing (SPEC §6.1), with no I/O.

On a tier-4 session every ``qssh-queue`` frame body is sealed with an AEAD key derived
from a QKD key (ETSI GS QKD 014) bound to the SSH session, on top of SSH's own
encryption. The frame keeps its 4-byte length prefix; the body becomes::

    version (1 byte, 0x01) || epoch (u32 BE) || seq (u64 BE) || AEAD(ciphertext || tag)

The nonce is ``epoch || seq`` (12 bytes); each direction and each epoch has its own key,
so a nonce never repeats under one key. The associated data is a label naming the
direction plus the 13-byte header, so a frame cannot be moved to the other direction.
The receiver insists on the exact next ``(epoch, seq)``: a replayed, reordered, dropped
or forged frame is refused with :class:`SealError` and the session must end — the
stream cannot be trusted after that.

Keys: ``HKDF-SHA-256(ikm = QKD key, salt = SSH session id, info = label || epoch ||
client nonce || server nonce || key_IDs)`` gives 64 bytes, the client→server key and the
server→client key. The nonces carry fresh randomness from each side (OS randomness,
mixed with health-tested QRNG output where the node has it; see ``transport.entropy``).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sidecar.errors import ErrorCode, SidecarError

VERSION = 0x01
SEALED_HEADER = struct.Struct(">BIQ")  # version, epoch, seq
TAG_BYTES = 16
OVERHEAD = SEALED_HEADER.size + TAG_BYTES  # bytes a sealed body adds to the plain body
KEY_BYTES = 32
MIN_QKD_KEY_BYTES = 32  # 256 bits of QKD key material at least
MAX_SEQ = 2**64 - 1
_LABEL = b"qssh-queue tier4 frame keys v1"


class Aead(StrEnum):
    AES_256_GCM = "aes-256-gcm"
    CHACHA20_POLY1305 = "chacha20-poly1305"


class Direction(StrEnum):
    CLIENT_TO_SERVER = "c2s"
    SERVER_TO_CLIENT = "s2c"


class SealError(SidecarError):
    """A sealed frame was refused (replayed, reordered, forged, or not sealed at all).

    The session that sees it is closed: a sealed stream with a hole is not trusted."""

    code = ErrorCode.FORBIDDEN


@dataclass(frozen=True, slots=True)
class DirectionKeys:
    """The two AEAD keys of one epoch (secret: never logged, ``repr`` hides them)."""

    epoch: int
    client_to_server: bytes
    server_to_client: bytes

    def __repr__(self) -> str:
        return f"DirectionKeys(epoch={self.epoch})"

    def for_direction(self, direction: Direction) -> bytes:
        if direction is Direction.CLIENT_TO_SERVER:
            return self.client_to_server
        return self.server_to_client


def derive_keys(
    qkd_key: bytes,
    session_binding: bytes,
    *,
    epoch: int,
    client_nonce: bytes,
    server_nonce: bytes,
    key_ids: Sequence[str],
) -> DirectionKeys:
    """Both directions' keys for ``epoch`` from one QKD key, bound to the SSH session."""
    if len(qkd_key) < MIN_QKD_KEY_BYTES:
        raise SealError(
            f"QKD key of {len(qkd_key) * 8} bits is too short; at least "
            f"{MIN_QKD_KEY_BYTES * 8} bits are needed"
        )
    if not session_binding:
        raise SealError("no SSH session binding to derive the frame keys from")
    if not 0 <= epoch < 2**32:
        raise SealError(f"epoch {epoch} out of range")
    info = b"|".join(
        [
            _LABEL,
            struct.pack(">I", epoch),
            client_nonce,
            server_nonce,
            ",".join(key_ids).encode(),
        ]
    )
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * KEY_BYTES, salt=session_binding, info=info)
    material = okm.derive(qkd_key)
    return DirectionKeys(epoch, material[:KEY_BYTES], material[KEY_BYTES:])


def _cipher(aead: Aead, key: bytes) -> AESGCM | ChaCha20Poly1305:
    if aead is Aead.AES_256_GCM:
        return AESGCM(key)
    return ChaCha20Poly1305(key)


def _aad(direction: Direction, header: bytes) -> bytes:
    return b"qssh-queue sealed " + direction.value.encode() + b" " + header


def is_sealed(body: bytes) -> bool:
    """A sealed body starts with the version byte; a plain one with ``{``."""
    return len(body) >= OVERHEAD and body[0] == VERSION


class _DirectionState:
    def __init__(self, aead: Aead, direction: Direction, keys: DirectionKeys) -> None:
        self.aead = aead
        self.direction = direction
        self.epoch = keys.epoch
        self._cipher = _cipher(aead, keys.for_direction(direction))
        self.seq = 0
        self.frames_total = 0
        self.started = time.monotonic()

    def switch(self, keys: DirectionKeys) -> None:
        if keys.epoch != self.epoch + 1:
            raise SealError(f"rekey to epoch {keys.epoch} after epoch {self.epoch}")
        self.epoch = keys.epoch
        self._cipher = _cipher(self.aead, keys.for_direction(self.direction))
        self.seq = 0
        self.started = time.monotonic()


class FrameSealer(_DirectionState):
    """Seals the frame bodies one side sends, in order."""

    def seal(self, body: bytes) -> bytes:
        if self.seq > MAX_SEQ:
            raise SealError("sequence numbers exhausted; rekey first")
        header = SEALED_HEADER.pack(VERSION, self.epoch, self.seq)
        nonce = header[1:]
        sealed = header + self._cipher.encrypt(nonce, body, _aad(self.direction, header))
        self.seq += 1
        self.frames_total += 1
        return sealed


class FrameOpener(_DirectionState):
    """Opens the frame bodies the other side sends; only the exact next one is accepted."""

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < OVERHEAD or sealed[0] != VERSION:
            raise SealError(
                f"unsealed or malformed frame on a sealed {self.direction.value} stream "
                "(every frame of a tier-4 session must be sealed)"
            )
        header = sealed[: SEALED_HEADER.size]
        _, epoch, seq = SEALED_HEADER.unpack(header)
        if epoch != self.epoch:
            raise SealError(
                f"sealed frame of epoch {epoch} while epoch {self.epoch} is current "
                "(replayed from an old key, or out of order)"
            )
        if seq < self.seq:
            raise SealError(f"replayed sealed frame: seq {seq}, expected {self.seq}")
        if seq > self.seq:
            raise SealError(
                f"sealed frame out of order: seq {seq}, expected {self.seq} "
                "(a frame was dropped or reordered)"
            )
        try:
            body = self._cipher.decrypt(
                header[1:], sealed[SEALED_HEADER.size :], _aad(self.direction, header)
            )
        except InvalidTag:
            raise SealError(
                f"sealed frame {epoch}/{seq} failed authentication (forged, corrupted, "
                "or sealed with another key)"
            ) from None
        self.seq += 1
        self.frames_total += 1
        return body


@dataclass(frozen=True, slots=True)
class RekeyPolicy:
    """Rekey after ``frames`` frames in either direction or ``seconds`` of key age.

    The client starts a rekey at these limits; the server ends a session that goes
    ``grace`` times past them without one."""

    frames: int = 100_000
    seconds: float = 600.0
    grace: float = 2.0

    def __post_init__(self) -> None:
        if self.frames < 1 or self.seconds <= 0 or self.grace < 1:
            raise ValueError("rekey frames and seconds must be positive, grace >= 1")

    def due(self, sealer: FrameSealer, opener: FrameOpener, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return (
            max(sealer.seq, opener.seq) >= self.frames
            or now - min(sealer.started, opener.started) >= self.seconds
        )

    def overdue(self, sealer: FrameSealer, opener: FrameOpener, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return (
            max(sealer.seq, opener.seq) >= self.frames * self.grace
            or now - min(sealer.started, opener.started) >= self.seconds * self.grace
        )


class SealedStream:
    """One side's sealer and opener for a session; ``role`` is ``client`` or ``server``."""

    def __init__(self, role: str, aead: Aead, keys: DirectionKeys) -> None:
        if role not in ("client", "server"):
            raise ValueError("role must be client or server")
        send = Direction.CLIENT_TO_SERVER if role == "client" else Direction.SERVER_TO_CLIENT
        recv = Direction.SERVER_TO_CLIENT if role == "client" else Direction.CLIENT_TO_SERVER
        self.role = role
        self.aead = aead
        self.sealer = FrameSealer(aead, send, keys)
        self.opener = FrameOpener(aead, recv, keys)
        self.rekeys = 0

    def seal(self, body: bytes) -> bytes:
        return self.sealer.seal(body)

    def open(self, sealed: bytes) -> bytes:
        return self.opener.open(sealed)

    def switch_send(self, keys: DirectionKeys) -> None:
        self.sealer.switch(keys)

    def switch_receive(self, keys: DirectionKeys) -> None:
        self.opener.switch(keys)
        self.rekeys += 1
