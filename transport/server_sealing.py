"""One channel's tier-4 sealing on the server side: plain until ``qkd_hello``, then sealed.

The SSH session hands every received frame body to :meth:`ServerSealing.incoming` and
every frame it sends through :meth:`ServerSealing.outgoing`. Until the QKD exchange
completes nothing is sealed; afterwards every body in both directions is, and a body
that does not open (replayed, reordered, forged, unsealed) ends the channel with the
reason. Frames that arrive while a key is being fetched from the KME are held, in
order, and processed once the key is there.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from sidecar.errors import ErrorCode
from transport.protocol import HEADER, EventName, encode_error, encode_event, encode_result
from transport.protocol.sealing import SealedStream, SealError
from transport.qkd import (
    HELLO_ID,
    HELLO_METHOD,
    NONCE_BYTES,
    REKEY_METHOD,
    Hello,
    QKDFailed,
    QKDSettings,
    b64,
    derive,
    fetch_slave_key,
    key_ids_of,
    session_binding,
    unb64,
)

log = logging.getLogger(__name__)


class SealState(enum.Enum):
    FRESH = "fresh"  # nothing received yet
    NEGOTIATING = "negotiating"  # qkd_hello received, fetching the key
    SEALED = "sealed"
    PLAIN = "plain"  # no QKD on this channel (not asked, or it failed)
    CLOSED = "closed"


class ServerSealing:
    def __init__(
        self,
        settings: QKDSettings | None,
        conn: Any,
        *,
        write: Callable[[bytes], None],
        deliver: Callable[[bytes], None],
        close: Callable[[str], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        changed: Callable[[], None],
        max_held: int = 4096,
        who: str = "a client",
    ) -> None:
        self.settings = settings
        self.who = who  # whose channel, for the log: "<principal> <key> from <address>"
        self.max_held = max_held  # frames kept while a key is fetched, at most
        self.conn = conn
        self._write = write
        self._deliver = deliver
        self._close = close
        self._spawn = spawn
        self._changed = changed
        self.state = SealState.FRESH
        self.stream: SealedStream | None = None
        self.failure: str | None = None  # why this channel is not sealed, if QKD failed
        self._held: list[bytes] | None = None  # bodies received while a key is fetched
        self._binding = b""
        self._master_sae = ""
        self._server_nonce = b""
        self.frames_sealed = 0
        self.frames_opened = 0

    @property
    def sealed(self) -> bool:
        return self.state is SealState.SEALED

    @property
    def epoch(self) -> int | None:
        return None if self.stream is None else self.stream.sealer.epoch

    @property
    def rekeys(self) -> int:
        return 0 if self.stream is None else self.stream.rekeys

    # ----- bytes in

    def incoming(self, body: bytes) -> None:
        if self._held is not None:
            if len(self._held) >= self.max_held:
                self.fail(f"more than {self.max_held} frames sent during a QKD key exchange")
                return
            self._held.append(body)
            return
        state = self.state
        if state is SealState.SEALED:
            self._open(body)
        elif state is SealState.FRESH:
            self._first(body)
        elif state is SealState.PLAIN:
            self._deliver(body)

    def _first(self, body: bytes) -> None:
        hello = None
        if b'"' + HELLO_METHOD.encode() + b'"' in body:
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and obj.get("method") == HELLO_METHOD:
                hello = obj.get("params") if isinstance(obj.get("params"), dict) else {}
        if hello is None:
            self.state = SealState.PLAIN
            self._deliver(body)
            return
        if self.settings is None:
            self.state = SealState.PLAIN
            self.failure = "this server has no QKD key manager configured"
            message = f"{self.failure}: tier 4 is not available here; the session goes on unsealed"
            self._write(encode_error(HELLO_ID, ErrorCode.TIER_REQUIRED, message))
            self._changed()
            return
        self.state = SealState.NEGOTIATING
        self._held = []
        self._spawn(self._agree(hello))

    def _open(self, body: bytes) -> None:
        stream = self.stream
        assert stream is not None
        assert self.settings is not None
        try:
            plain = stream.open(body)
        except SealError as exc:
            self.fail(f"sealed stream broken: {exc.message}")
            return
        self.frames_opened += 1
        if self.settings.rekey.overdue(stream.sealer, stream.opener):
            self.fail("the client did not rekey in time (QKD key used past its limits)")
            return
        if b'"' + REKEY_METHOD.encode() + b'"' in plain:
            obj = _load(plain)
            if obj is not None and obj.get("method") == REKEY_METHOD:
                self._held = []
                self._spawn(self._rekey(obj))
                return
        self._deliver(plain)

    # ----- bytes out

    def outgoing(self, frame: bytes) -> bytes:
        """``frame`` (length + body) as it goes on the wire: sealed on a sealed channel."""
        if self.state is not SealState.SEALED or self.stream is None:
            return frame
        sealed = self.stream.seal(frame[HEADER.size :])
        self.frames_sealed += 1
        return HEADER.pack(len(sealed)) + sealed

    # ----- the exchanges

    async def _agree(self, params: dict[str, Any]) -> None:
        settings = self.settings
        assert settings is not None
        try:
            hello = Hello.from_params(params)
            key = await fetch_slave_key(settings, hello.master_sae_id, hello.key_ids)
            self._binding = session_binding(self.conn)
            self._server_nonce = await _fresh_nonce(settings, "tier4 server nonce")
            keys = derive(key, self._binding, 0, hello.nonce, self._server_nonce, hello.key_ids)
        except QKDFailed as exc:
            if self.state is SealState.CLOSED:
                return
            self.failure = exc.message
            log.warning("QKD sealing refused for the channel of %s: %s", self.who, exc.message)
            message = f"{exc.message}; this session goes on unsealed (not tier 4)"
            self._write(encode_error(HELLO_ID, ErrorCode.TIER_REQUIRED, message))
            self.state = SealState.PLAIN
            self._changed()
            self._release_held()
            return
        if self.state is SealState.CLOSED:  # ended while the key was fetched
            return
        self._master_sae = hello.master_sae_id
        reply = {
            "epoch": 0,
            "nonce": b64(self._server_nonce),
            "aead": settings.aead.value,
            "rekey_frames": settings.rekey.frames,
            "rekey_seconds": settings.rekey.seconds,
        }
        self._write(encode_result(HELLO_ID, reply))  # the last plain frame
        self.stream = SealedStream("server", hello.aead, keys)
        self.state = SealState.SEALED
        self._write(encode_event(EventName.QKD_SEALED, {"epoch": 0}))  # the first sealed one
        self._changed()
        self._release_held()

    async def _rekey(self, request: dict[str, Any]) -> None:
        settings, stream = self.settings, self.stream
        assert settings is not None
        assert stream is not None
        request_id = _id(request.get("id")) or "qkd-rekey"
        params = request.get("params") if isinstance(request.get("params"), dict) else {}
        assert isinstance(params, dict)
        try:
            epoch = params.get("epoch")
            if epoch != stream.opener.epoch + 1:
                raise QKDFailed(f"rekey to epoch {epoch!r} after {stream.opener.epoch}")
            ids = key_ids_of(params)
            nonce = unb64(params.get("nonce"), "nonce")
            if len(nonce) != NONCE_BYTES:
                raise QKDFailed(f"nonce must be {NONCE_BYTES} bytes")
            key = await fetch_slave_key(settings, self._master_sae, ids)
            keys = derive(key, self._binding, epoch, nonce, self._server_nonce, ids)
        except QKDFailed as exc:
            self._write(encode_error(request_id, ErrorCode.TIER_REQUIRED, exc.message))
            self.fail(f"QKD rekey failed: {exc.message}")
            return
        if self.state is SealState.CLOSED:  # ended while the key was fetched
            return
        stream.switch_receive(keys)
        self._write(encode_result(request_id, {"epoch": epoch}))  # old key, last one
        stream.switch_send(keys)
        log.info("channel of %s rekeyed to epoch %d with a fresh QKD key", self.who, epoch)
        self._changed()
        self._release_held()

    def _release_held(self) -> None:
        held, self._held = self._held or [], None
        for i, body in enumerate(held):
            if self.state is SealState.CLOSED:
                return
            self.incoming(body)
            if self.holding:  # another exchange started: keep the rest for it
                self._hold(held[i + 1 :])
                return

    @property
    def holding(self) -> bool:
        return self._held is not None

    def _hold(self, bodies: list[bytes]) -> None:
        assert self._held is not None
        self._held.extend(bodies)

    def fail(self, reason: str) -> None:
        """End the channel: a sealed stream with a hole cannot be trusted."""
        if self.state is SealState.CLOSED:
            return
        log.warning("closing the tier-4 channel of %s: %s", self.who, reason)
        self.failure = reason
        self._write(
            encode_event(
                EventName.SESSION_CLOSED, {"code": ErrorCode.FORBIDDEN.value, "message": reason}
            )
        )
        self.state = SealState.CLOSED
        self._held = None
        self._changed()
        self._close(reason)


async def _fresh_nonce(settings: QKDSettings, label: str) -> bytes:
    mixer = settings.entropy
    if mixer.has_qrng:  # a QRNG read blocks: keep it off the event loop
        return await asyncio.to_thread(mixer.random_bytes, NONCE_BYTES, label)
    return mixer.random_bytes(NONCE_BYTES, label)


def _load(body: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _id(value: object) -> int | str | None:
    return value if isinstance(value, int | str) and not isinstance(value, bool) else None
