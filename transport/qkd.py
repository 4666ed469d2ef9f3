"""Tier-4 key agreement through ETSI GS QKD 014 key managers (SPEC §6.1).

After the SSH handshake the client (the master SAE) asks its KME for a key
(``enc_keys``) and sends the key_ID(s) in the channel's first frame, a ``qkd_hello``
request; the server (the slave SAE) fetches the same key from its own KME
(``dec_keys``). Both derive the frame keys (:mod:`transport.protocol.sealing`) bound
to the SSH session id, the server answers with its nonce in a plain reply, and from
then on every frame in both directions is sealed. Rekeying repeats the exchange with
fresh key_IDs inside the sealed stream (``qkd_rekey``).

The SSH session id: asyncssh does not expose it publicly; it is the exchange hash of
the first key exchange, which both ends hold as ``conn._session_id`` (RFC 4253 §7.2).
:func:`session_binding` reads it there and refuses to go on without it, so a QKD key
is never used unbound.

Anything that can answer ``enc_keys`` / ``dec_keys`` like :class:`hardware.kme.KMEClient`
is a :class:`KeyManager`; of ``hardware`` the transport's library modules read only the
tier (only its ``*_cli`` entry points and the daemon wire a KME client in).
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar.errors import ErrorCode, SidecarError
from transport.entropy import OS_ONLY, EntropyMixer
from transport.protocol.sealing import Aead, DirectionKeys, RekeyPolicy, SealError, derive_keys

HELLO_METHOD = "qkd_hello"
REKEY_METHOD = "qkd_rekey"
HELLO_ID = "qkd-hello"
REKEY_ID_PREFIX = "qkd-rekey-"
PROTOCOL_VERSION = 1
NONCE_BYTES = 32
MAX_KEY_IDS = 8
MAX_USED_KEY_IDS = 100_000  # key_IDs remembered as used, per process (oldest forgotten)


class QKDFailed(SidecarError):
    """The QKD key agreement failed: the session cannot be tier 4."""

    code = ErrorCode.TIER_REQUIRED


class KeyLike(Protocol):
    @property
    def key_ID(self) -> str: ...

    @property
    def key(self) -> bytes: ...


class KeyManager(Protocol):
    """The two ETSI 014 calls this module needs (``hardware.kme.KMEClient`` has them)."""

    async def enc_keys(
        self, slave_sae_id: str, number: int = 1, size: int | None = None
    ) -> Sequence[KeyLike]: ...

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[str]) -> Sequence[KeyLike]: ...


class UsedKeyIds:
    """The QKD key_IDs this process has used (hello or rekey), so none is used twice.

    Keyed by (peer SAE, key_ID); bounded: past ``limit`` entries the oldest are forgotten.
    A KME that deletes a key once delivered (ETSI 014) never hands it out again; this
    catches one that does, and a peer naming the same key_ID twice.
    """

    def __init__(self, limit: int = MAX_USED_KEY_IDS) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def consume(self, sae_id: str, key_ids: Sequence[str]) -> None:
        """Mark ``key_ids`` used; a :class:`QKDFailed` (and none marked) if one was."""
        if len(set(key_ids)) != len(key_ids):
            raise QKDFailed("the same QKD key_ID is named twice")
        with self._lock:
            reused = [k for k in key_ids if (sae_id, k) in self._seen]
            if reused:
                raise QKDFailed(f"QKD key_ID {reused[0][:64]!r} was already used; never again")
            for k in key_ids:
                self._seen[(sae_id, k)] = None
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)


USED_KEY_IDS = UsedKeyIds()  # one per process: shared by every session and relay


@dataclass(frozen=True)
class QKDSettings:
    """One side's tier-4 settings.

    Client: ``sae_id`` is its own (master) SAE, ``peer_sae_id`` the server's (slave) SAE.
    Server: ``sae_id`` is its own (slave) SAE; ``peer_sae_id`` unused (the client names
    itself in the hello, and the KME checks that the key was meant for this pair).
    """

    kme: KeyManager
    sae_id: str
    peer_sae_id: str = ""
    aead: Aead = Aead.AES_256_GCM
    rekey: RekeyPolicy = field(default_factory=RekeyPolicy)
    key_bits: int = 256  # asked of the KME (client); less is refused (both sides)
    entropy: EntropyMixer = OS_ONLY
    used: UsedKeyIds = USED_KEY_IDS


def session_binding(conn: Any) -> bytes:
    """The SSH session id (first exchange hash) both ends of ``conn`` share."""
    value = getattr(conn, "_session_id", b"")
    if not isinstance(value, bytes) or not value:
        raise QKDFailed("the SSH session id is not available; cannot bind a QKD key to it")
    return value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise QKDFailed(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise QKDFailed(f"{what} is not base64") from None


def key_ids_of(params: dict[str, Any]) -> list[str]:
    ids = params.get("key_ids")
    if (
        not isinstance(ids, list)
        or not 0 < len(ids) <= MAX_KEY_IDS
        or not all(isinstance(i, str) and 0 < len(i) <= 256 for i in ids)
    ):
        raise QKDFailed(f"key_ids must be 1..{MAX_KEY_IDS} key_ID strings")
    return ids


def joined_key(keys: Sequence[KeyLike], key_ids: Sequence[str]) -> bytes:
    """The key material of ``key_ids`` in that order (a mismatch is a failure)."""
    by_id = {k.key_ID: k.key for k in keys}
    if sorted(by_id) != sorted(key_ids):
        raise QKDFailed("the KME returned other key_IDs than asked for")
    return b"".join(by_id[i] for i in key_ids)


async def fetch_master_key(settings: QKDSettings) -> tuple[list[str], bytes]:
    """Client side: a fresh key from our KME for the server's SAE; (key_IDs, key)."""
    try:
        keys = await settings.kme.enc_keys(settings.peer_sae_id, 1, settings.key_bits)
    except Exception as exc:
        raise QKDFailed(f"QKD enc_keys on our KME failed: {_describe(exc)}") from None
    if not keys:
        raise QKDFailed("QKD enc_keys returned no key")
    ids = [k.key_ID for k in keys]
    key = _long_enough(settings, joined_key(keys, ids))
    settings.used.consume(settings.peer_sae_id, ids)
    return ids, key


async def fetch_slave_key(settings: QKDSettings, master_sae_id: str, key_ids: list[str]) -> bytes:
    """Server side: the key the client named, from our KME (each key_ID once only)."""
    settings.used.consume(master_sae_id, key_ids)
    try:
        keys = await settings.kme.dec_keys(master_sae_id, key_ids)
    except Exception as exc:
        raise QKDFailed(f"QKD dec_keys on the server's KME failed: {_describe(exc)}") from None
    return _long_enough(settings, joined_key(keys, key_ids))


def _long_enough(settings: QKDSettings, key: bytes) -> bytes:
    if len(key) * 8 < settings.key_bits:
        raise QKDFailed(f"QKD key of {len(key) * 8} bits; at least {settings.key_bits} needed")
    return key


MAX_REASON_CHARS = 400  # of a KME error in a QKD failure (logged, sent to the peer)


def _describe(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "…"


@dataclass(frozen=True)
class Hello:
    master_sae_id: str
    key_ids: list[str]
    nonce: bytes
    aead: Aead

    def to_params(self) -> dict[str, Any]:
        return {
            "version": PROTOCOL_VERSION,
            "master_sae_id": self.master_sae_id,
            "key_ids": self.key_ids,
            "nonce": b64(self.nonce),
            "aead": self.aead.value,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Hello:
        if params.get("version") != PROTOCOL_VERSION:
            raise QKDFailed(f"qkd_hello version {params.get('version')!r} is not supported")
        sae = params.get("master_sae_id")
        if not isinstance(sae, str) or not sae:
            raise QKDFailed("qkd_hello needs master_sae_id")
        try:
            aead = Aead(str(params.get("aead", Aead.AES_256_GCM.value)))
        except ValueError:
            raise QKDFailed(f"unknown AEAD {params.get('aead')!r}") from None
        nonce = unb64(params.get("nonce"), "nonce")
        if len(nonce) != NONCE_BYTES:
            raise QKDFailed(f"nonce must be {NONCE_BYTES} bytes")
        return cls(sae, key_ids_of(params), nonce, aead)


def derive(  # noqa: PLR0917 (the HKDF inputs, in their order)
    qkd_key: bytes,
    binding: bytes,
    epoch: int,
    client_nonce: bytes,
    server_nonce: bytes,
    key_ids: Sequence[str],
) -> DirectionKeys:
    try:
        return derive_keys(
            qkd_key,
            binding,
            epoch=epoch,
            client_nonce=client_nonce,
            server_nonce=server_nonce,
            key_ids=key_ids,
        )
    except SealError as exc:
        raise QKDFailed(f"cannot derive frame keys: {exc.message}") from None
