"""The client end of tier-4 sealing (see :mod:`transport.server_sealing` for the server).

The client is the master SAE: it fetches keys with ``enc_keys``, names them in
``qkd_hello`` (and later ``qkd_rekey``), and starts every rekey, when its
:class:`RekeyPolicy` says the key has sealed enough frames or is old enough. Opening
and sealing happen frame by frame in order, so a key switch takes effect exactly
between two frames on both ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from transport.protocol import HEADER, encode_request
from transport.protocol.sealing import DirectionKeys, RekeyPolicy, SealedStream, SealError
from transport.qkd import (
    HELLO_ID,
    HELLO_METHOD,
    NONCE_BYTES,
    REKEY_ID_PREFIX,
    REKEY_METHOD,
    Hello,
    QKDFailed,
    QKDSettings,
    b64,
    derive,
    fetch_master_key,
    session_binding,
    unb64,
)

log = logging.getLogger(__name__)
REKEY_RETRY_SECONDS = 1.0


@dataclass
class _Pending:
    key: bytes
    key_ids: list[str]
    nonce: bytes


class ClientSealing:
    """Holds the sealed stream of one client channel once the QKD exchange is done."""

    def __init__(self, settings: QKDSettings, conn: Any, send: Callable[[bytes], None]) -> None:
        self.settings = settings
        self.conn = conn
        self._send = send
        self.stream: SealedStream | None = None
        self.policy: RekeyPolicy = settings.rekey
        self._binding = b""
        self._server_nonce = b""
        self._hello: _Pending | None = None
        self._next_receive: DirectionKeys | None = None
        self._rekeying = False
        self._retry_after = 0.0
        self.rekey_failures = 0
        self.rekeys_started = 0
        self.confirmed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sealed(self) -> bool:
        return self.stream is not None

    async def hello_frame(self) -> bytes:
        """Fetch a key from our KME and build the plain ``qkd_hello`` frame."""
        ids, key = await fetch_master_key(self.settings)
        self._binding = session_binding(self.conn)
        nonce = await _nonce(self.settings, "tier4 client nonce")
        self._hello = _Pending(key, ids, nonce)
        hello = Hello(self.settings.sae_id, ids, nonce, self.settings.aead)
        return encode_request(HELLO_ID, HELLO_METHOD, hello.to_params())

    def accepted(self, result: Any) -> None:
        """The server's plain ``qkd_hello`` reply: derive the keys, seal from now on."""
        pending, self._hello = self._hello, None
        if pending is None or not isinstance(result, dict):
            raise QKDFailed("unexpected qkd_hello reply")
        self._server_nonce = unb64(result.get("nonce"), "server nonce")
        if len(self._server_nonce) != NONCE_BYTES:
            raise QKDFailed(f"server nonce must be {NONCE_BYTES} bytes")
        keys = derive(
            pending.key, self._binding, 0, pending.nonce, self._server_nonce, pending.key_ids
        )
        frames = result.get("rekey_frames")
        seconds = result.get("rekey_seconds")
        if isinstance(frames, int) and isinstance(seconds, int | float):
            if frames < 1 or not seconds > 0:  # nan too
                raise QKDFailed(f"server rekey limits must be positive: {frames}, {seconds}")
            # rekey by the stricter of our limits and the server's
            self.policy = replace(
                self.policy,
                frames=min(self.policy.frames, frames),
                seconds=min(self.policy.seconds, float(seconds)),
            )
        self.stream = SealedStream("client", self.settings.aead, keys)
        # an idle channel still rekeys by age, before the server calls it overdue
        self._spawn(self._age_watch())

    # ----- per frame

    def open(self, body: bytes) -> bytes:
        if self.stream is None:
            return body
        plain = self.stream.open(body)
        self._maybe_rekey()
        return plain

    def seal(self, frame: bytes) -> bytes:
        if self.stream is None:
            return frame
        sealed = self.stream.seal(frame[HEADER.size :])
        self._maybe_rekey()
        return HEADER.pack(len(sealed)) + sealed

    def rekey_reply(self, ok: bool, message: str = "") -> None:
        """The server's reply to our ``qkd_rekey`` (opened with the old key)."""
        keys, self._next_receive = self._next_receive, None
        if not ok or keys is None or self.stream is None:
            raise SealError(f"QKD rekey refused by the server: {message or 'no pending rekey'}")
        self.stream.switch_receive(keys)

    # ----- rekeying

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _age_watch(self) -> None:
        while self.stream is not None:
            await asyncio.sleep(max(0.01, self.policy.seconds / 4))
            self._maybe_rekey()

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _maybe_rekey(self) -> None:
        stream = self.stream
        if stream is None or self._rekeying or self._next_receive is not None:
            return
        if time.monotonic() < self._retry_after:
            return
        if self.policy.due(stream.sealer, stream.opener):
            self._rekeying = True
            self._spawn(self._rekey())

    async def _rekey(self) -> None:
        stream = self.stream
        assert stream is not None
        try:
            ids, key = await fetch_master_key(self.settings)
            nonce = await _nonce(self.settings, "tier4 client rekey nonce")
        except QKDFailed as exc:
            self.rekey_failures += 1
            self._retry_after = time.monotonic() + REKEY_RETRY_SECONDS
            log.warning("QKD rekey postponed: %s", exc.message)
            self._rekeying = False
            return
        epoch = stream.sealer.epoch + 1
        keys = derive(key, self._binding, epoch, nonce, self._server_nonce, ids)
        params = {"epoch": epoch, "key_ids": ids, "nonce": b64(nonce)}
        self._next_receive = keys
        self._send(encode_request(f"{REKEY_ID_PREFIX}{epoch}", REKEY_METHOD, params))
        stream.switch_send(keys)  # everything after the rekey request uses the new key
        self.rekeys_started += 1
        self._rekeying = False


async def _nonce(settings: QKDSettings, label: str) -> bytes:
    mixer = settings.entropy
    if mixer.has_qrng:
        return await asyncio.to_thread(mixer.random_bytes, NONCE_BYTES, label)
    return mixer.random_bytes(NONCE_BYTES, label)
