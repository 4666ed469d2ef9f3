"""Python client of the queue service (SPEC §5.4).

    async with QueueClient.connect("127.0.0.1", 22222, client_keys=[key]) as c:
        await c.submit({"kind": "telemetry", "name": "x", "value": 1})

Requests are pipelined: any number of coroutines may call methods concurrently on one
client; each awaits its own reply. Errors come back as the ``sidecar.errors`` type of
their wire code.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncssh

from sidecar import errors
from sidecar.errors import ErrorCode, SidecarError, Unavailable
from transport.auth import DEFAULT_USERNAME
from transport.client_sealing import ClientSealing
from transport.coalesce import write_as_one
from transport.host_pinning import HostKeyError, HostKeyPinning, StrictHostKeyChecking
from transport.ignore_packets import skip_ignore_packets
from transport.limits import ServiceLimits
from transport.protocol import (
    DEFAULT_PORT,
    EventName,
    FrameDecoder,
    ProtocolError,
    Reply,
    encode_request,
    parse_reply,
)
from transport.protocol.sealing import SealError
from transport.qkd import HELLO_ID, REKEY_ID_PREFIX, QKDFailed, QKDSettings
from transport.ssh_config import HostConfig, qssh_home
from transport.ssh_options import ssh_options_for_tier

SUBSYSTEM = "qssh-queue"
# post-quantum only: a server refuses a classical key, and each one offered costs a try
DEFAULT_IDENTITIES = ("id_falcon512", "id_falcon1024", "id_mldsa65", "id_mldsa44")


def _error_classes() -> dict[str, type[SidecarError]]:
    table: dict[str, type[SidecarError]] = {}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, SidecarError):
            table.setdefault(value.code.value, value)
    # the most general class per code
    table[ErrorCode.BAD_REQUEST.value] = errors.InvalidMessage
    table[ErrorCode.UNAVAILABLE.value] = errors.Unavailable
    return table


_ERRORS = _error_classes()


class RemoteError(SidecarError):
    """An error code the client does not know a class for."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.remote_code = code

    def to_wire(self) -> dict[str, str]:
        return {"code": self.remote_code, "message": self.message}


def error_from_wire(code: str, message: str) -> SidecarError:
    cls = _ERRORS.get(code)
    if cls is None:
        return RemoteError(code, message)
    return cls(message)


class ConnectFailed(Unavailable):
    """The SSH connection or the ``qssh-queue`` channel could not be set up."""


class AuthRefused(errors.Forbidden):
    """The server accepted none of our keys."""


class _ClientSession(asyncssh.SSHClientSession[bytes]):
    def __init__(self, client: QueueClient) -> None:
        self._client = client
        self._decoder = FrameDecoder(client.max_frame_bytes)
        # received frame bodies of a sealed channel, as they came off SSH (for checks)
        self.wire_in: list[bytes] = []

    def data_received(self, data: bytes, datatype: int | None) -> None:
        try:
            frames = self._decoder.feed(data)
        except SidecarError as exc:
            self._client._fail_all(exc)
            return
        client = self._client
        for raw in frames:
            try:
                body = raw
                if client.sealing is not None:
                    if client.sealing.sealed:
                        self.wire_in.append(raw)
                    body = client.sealing.open(raw)
                client._frame(parse_reply(body))
            except SealError as exc:
                client._fail_all(exc)
                client.conn.close()
                return
            except (ProtocolError, QKDFailed) as exc:
                client._fail_all(exc)
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._fail_all(
            Unavailable(f"connection to the queue service lost: {exc or 'closed'}")
        )


class _PinningClient(asyncssh.SSHClient):
    def __init__(self, pinning: HostKeyPinning | None) -> None:
        self.pinning = pinning

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        skip_ignore_packets(conn)

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        if self.pinning is None:
            return True
        return self.pinning.check(host, addr, port, key)


class Subscription:
    """Deliveries pushed by the server; grants one credit back per delivery taken."""

    def __init__(self, client: QueueClient, sub_id: int) -> None:
        self.client = client
        self.id = sub_id
        self.queue: asyncio.Queue[dict[str, Any] | SidecarError] = asyncio.Queue()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.next()

    async def next(self) -> dict[str, Any]:
        item = await self.queue.get()
        if isinstance(item, SidecarError):
            raise item
        return item

    async def grant(self, n: int = 1) -> None:
        await self.client.call("credit", {"subscription": self.id, "n": n})

    async def stop(self) -> None:
        await self.client.call("unsubscribe", {"subscription": self.id})
        self.client._subscriptions.pop(self.id, None)


class QueueClient:
    """One SSH connection with one ``qssh-queue`` channel."""

    def __init__(self, conn: asyncssh.SSHClientConnection, max_in_flight: int) -> None:
        self.conn = conn
        self.max_frame_bytes = 64 * 1024 * 1024
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subscriptions: dict[int, Subscription] = {}
        self._early: dict[int, list[dict[str, Any]]] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        self._failure: SidecarError | None = None
        self._outbox: list[bytes] = []
        self.sealing: ClientSealing | None = None
        self.qkd_failure: str | None = None  # why this session is not sealed, if QKD failed
        self.tier_notices: list[dict[str, Any]] = []  # pushed ``tier_changed`` events
        self.closed_reason: str | None = None
        self._session: _ClientSession | None = None
        self._qkd_reply: asyncio.Future[Reply] | None = None

    # ----- connecting

    @classmethod
    def connect(
        cls,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        username: str | None = None,
        client_keys: Sequence[Any] | None = None,
        known_hosts: Path | None = None,
        strict_host_key_checking: StrictHostKeyChecking | str = StrictHostKeyChecking.YES,
        tier: int = 2,
        connect_timeout: float = 30.0,
        max_in_flight: int = ServiceLimits().max_in_flight_per_channel,
        ssh_options: dict[str, Any] | None = None,
        qkd: QKDSettings | None = None,
        require_qkd: bool = False,
    ) -> _Connect:
        """Awaitable and async context manager. ``known_hosts=None`` skips pinning
        (only for tests that pin by other means); ``client_keys`` are keys or paths.

        With ``qkd`` the channel is sealed with a QKD key (tier 4) before it is handed
        out; if that fails the session goes on unsealed (``qkd_failure`` says why),
        or, with ``require_qkd``, the connection is closed and ``QKDFailed`` raised."""
        return _Connect(
            cls._open(
                host,
                port,
                username=username,
                client_keys=client_keys,
                known_hosts=known_hosts,
                strict=StrictHostKeyChecking(strict_host_key_checking),
                tier=tier,
                connect_timeout=connect_timeout,
                max_in_flight=max_in_flight,
                ssh_options=ssh_options or {},
                qkd=qkd,
                require_qkd=require_qkd,
            )
        )

    @classmethod
    def from_config(cls, cfg: HostConfig, **kwargs: Any) -> _Connect:
        keys: list[Any] = [str(p) for p in cfg.identity_files]
        if not keys:
            home = qssh_home()
            keys = [str(home / n) for n in DEFAULT_IDENTITIES if (home / n).exists()]
        return cls.connect(
            cfg.hostname,
            cfg.port,
            username=cfg.user,
            client_keys=keys,
            known_hosts=cfg.known_hosts,
            strict_host_key_checking=cfg.strict_host_key_checking,
            connect_timeout=cfg.connect_timeout,
            **kwargs,
        )

    @classmethod
    async def _open(
        cls,
        host: str,
        port: int,
        *,
        username: str | None,
        client_keys: Sequence[Any] | None,
        known_hosts: Path | None,
        strict: StrictHostKeyChecking,
        tier: int,
        connect_timeout: float,
        max_in_flight: int,
        ssh_options: dict[str, Any],
        qkd: QKDSettings | None = None,
        require_qkd: bool = False,
    ) -> QueueClient:
        pinning = HostKeyPinning(known_hosts, strict) if known_hosts is not None else None
        ssh_client = _PinningClient(pinning)
        options: dict[str, Any] = {**ssh_options_for_tier(tier, "client"), **ssh_options}
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: ssh_client,
                host,
                port,
                # not the local login name: the server takes only empty, the key's
                # principal or this default (docs/operations.md)
                username=DEFAULT_USERNAME if username is None else username,
                client_keys=list(client_keys) if client_keys is not None else None,
                known_hosts=([], [], []) if pinning is not None else None,
                agent_path=None,
                config=[],
                connect_timeout=connect_timeout,
                password=None,
                kbdint_auth=False,
                gss_host=None,
                **options,
            )
        except asyncssh.HostKeyNotVerifiable:
            if pinning is not None and pinning.refusal is not None:
                raise pinning.refusal from None
            raise HostKeyError(f"host key of {host}:{port} could not be verified") from None
        except asyncssh.PermissionDenied as exc:
            raise AuthRefused(
                f"{host}:{port} refused our key(s): {exc.reason} (is the public key in "
                "the server's authorized_keys, and the user empty, the key's principal "
                f"or {DEFAULT_USERNAME!r}?)"
            ) from None
        except asyncssh.KeyExchangeFailed as exc:
            raise ConnectFailed(
                f"no common post-quantum key exchange with {host}:{port}: {exc.reason}"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise ConnectFailed(f"cannot reach the queue service at {host}:{port}: {exc}") from None
        client = cls(conn, max_in_flight)
        session = _ClientSession(client)
        client._session = session
        try:
            chan, _ = await conn.create_session(lambda: session, subsystem=SUBSYSTEM, encoding=None)
        except asyncssh.ChannelOpenError as exc:
            conn.close()
            raise ConnectFailed(f"server refused the {SUBSYSTEM} channel: {exc.reason}") from None
        client._chan = chan
        if qkd is not None:
            try:
                await client._seal(qkd, connect_timeout)
            except QKDFailed as exc:
                if require_qkd or client._failure is not None:  # or the channel is gone
                    await client.close()
                    raise
                client.qkd_failure = exc.message
            except BaseException:
                await client.close()
                raise
        return client

    async def _seal(self, qkd: QKDSettings, timeout: float) -> None:  # noqa: ASYNC109
        """The QKD exchange (SPEC §6.1 tier 4): hello, derive keys, confirm."""
        sealing = ClientSealing(qkd, self.conn, self._send)
        # retrieved even when the exchange fails before it is awaited
        sealing.confirmed.add_done_callback(lambda f: f.cancelled() or f.exception())
        hello = await sealing.hello_frame()
        loop = asyncio.get_running_loop()
        self._qkd_reply = loop.create_future()
        self.sealing = sealing  # replies are opened from now on (the hello reply is plain)
        assert self._chan is not None
        self._chan.write(hello)
        try:
            async with asyncio.timeout(timeout):
                reply = await self._qkd_reply
                if not reply.ok:
                    raise QKDFailed(reply.error_message or "QKD refused by the server")
                await sealing.confirmed
        except TimeoutError:
            # The server may still switch the channel to sealed at any moment: a channel
            # in that state cannot go on plain, so the connection ends (see _open).
            failure = QKDFailed("the server did not complete the QKD exchange in time")
            self._fail_all(failure)
            self.sealing = None
            raise failure from None
        except QKDFailed:
            self.sealing = None
            raise

    async def close(self) -> None:
        if self.sealing is not None:
            self.sealing.close()
        if self._chan is not None:
            self._chan.close()
        self.conn.close()
        await self.conn.wait_closed()

    async def __aenter__(self) -> QueueClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ----- frames in

    def _frame(self, frame: Any) -> None:
        if isinstance(frame, Reply) and isinstance(frame.id, str) and frame.id.startswith("qkd-"):
            self._qkd_frame(frame)
            return
        if isinstance(frame, Reply):
            if frame.id is None or not isinstance(frame.id, int):
                if not frame.ok:
                    self._fail_all(
                        error_from_wire(frame.error_code or "", frame.error_message or "")
                    )
                return
            fut = self._pending.pop(frame.id, None)
            if fut is None or fut.done():
                return
            if frame.ok:
                fut.set_result(frame.result)
            else:
                fut.set_exception(
                    error_from_wire(frame.error_code or "", frame.error_message or "")
                )
            return
        if frame.name == EventName.TIER_CHANGED:
            self.tier_notices.append(frame.data)
            return
        if frame.name == EventName.QKD_SEALED and self.sealing is not None:
            if not self.sealing.confirmed.done():
                self.sealing.confirmed.set_result(int(frame.data.get("epoch", 0)))
            return
        if frame.name == EventName.SESSION_CLOSED:
            self.closed_reason = str(frame.data.get("message"))
            self._fail_all(
                error_from_wire(str(frame.data.get("code")), str(frame.data.get("message")))
            )
            return
        sub_id = frame.data.get("subscription")
        if not isinstance(sub_id, int):
            return
        sub = self._subscriptions.get(sub_id)
        if frame.name == EventName.DELIVERY:
            if sub is None:
                self._early.setdefault(sub_id, []).append(frame.data)
            else:
                sub.queue.put_nowait(frame.data)
        elif frame.name == EventName.SUBSCRIPTION_ENDED and sub is not None:
            sub.queue.put_nowait(
                error_from_wire(str(frame.data.get("code")), str(frame.data.get("message")))
            )

    def _qkd_frame(self, reply: Reply) -> None:
        """Replies to ``qkd_hello`` / ``qkd_rekey`` (the key switch happens right here,
        before the next frame is opened)."""
        sealing = self.sealing
        if reply.id == HELLO_ID:
            waiter = self._qkd_reply
            if sealing is not None and reply.ok:
                sealing.accepted(reply.result)
            elif sealing is not None:
                self.sealing = None  # the server said no: the channel stays plain
            if waiter is not None and not waiter.done():
                waiter.set_result(reply)
            return
        if sealing is not None and str(reply.id).startswith(REKEY_ID_PREFIX):
            sealing.rekey_reply(reply.ok, reply.error_message or "")

    @property
    def wire_frames_in(self) -> list[bytes]:
        """Sealed frame bodies received as they came off the SSH channel (tests check
        that they are not plain JSON)."""
        return [] if self._session is None else self._session.wire_in

    def _fail_all(self, exc: SidecarError) -> None:
        if self._failure is None:
            self._failure = exc
        sealing = self.sealing
        if sealing is not None:
            sealing.close()  # no rekeys on a dead channel
        if sealing is not None and not sealing.confirmed.done():
            sealing.confirmed.set_exception(QKDFailed(f"QKD key agreement failed: {exc.message}"))
        waiter = self._qkd_reply
        if waiter is not None and not waiter.done():
            waiter.set_exception(QKDFailed(f"QKD key agreement failed: {exc.message}"))
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        for sub in self._subscriptions.values():
            sub.queue.put_nowait(exc)

    # ----- requests

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and await its result (raises the error's type)."""
        async with self._slots:
            if self._failure is not None:
                raise self._failure
            assert self._chan is not None
            request_id = next(self._ids)
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[request_id] = fut
            self._send(encode_request(request_id, method, params or {}))
            try:
                return await fut
            finally:
                self._pending.pop(request_id, None)

    def _send(self, frame: bytes) -> None:
        # Requests made in the same loop turn leave as one channel write. A sealed
        # channel seals here, in send order.
        if self.sealing is not None:
            frame = self.sealing.seal(frame)
        self._outbox.append(frame)
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if frames and self._chan is not None and not self._chan.is_closing():
            write_as_one(self.conn, self._chan, b"".join(frames))

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("ping")
        return result

    async def submit(
        self,
        message: Any,
        mode: str = "default",
        *,
        dedup_id: str | None = None,
        broadcast: bool = False,
    ) -> dict[str, Any]:
        """Submit one message. With ``dedup_id`` a retry within the server's window
        stores nothing and answers the first id with ``"duplicate": true``;
        ``broadcast`` relays it to the server's peers too."""
        params: dict[str, Any] = {"message": message, "mode": mode}
        if dedup_id is not None:
            params["dedup_id"] = dedup_id
        if broadcast:
            params["broadcast"] = True
        result: dict[str, Any] = await self.call("submit", params)
        return result

    async def submit_batch(
        self,
        messages: Sequence[Any],
        mode: str = "default",
        *,
        dedup_ids: Sequence[str | None] | None = None,
        broadcast: bool = False,
    ) -> list[Any]:
        """``dedup_ids``, if given, has one entry (a string or None) per message."""
        params: dict[str, Any] = {"messages": list(messages), "mode": mode}
        if dedup_ids is not None:
            params["dedup_ids"] = list(dedup_ids)
        if broadcast:
            params["broadcast"] = True
        result = await self.call("submit_batch", params)
        return list(result["results"])

    async def pop(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self.call("pop")
        return result

    async def lease(
        self,
        timeout: float = 30.0,  # noqa: ASYNC109 (the lease length, not a call timeout)
        wait: float = 0.0,
        detach: bool = False,
        kinds: Sequence[str] | None = None,
    ) -> dict[str, Any] | None:
        """Reserve the next message (of one of ``kinds``, kind names, if given) for
        ``timeout`` s, waiting up to ``wait`` s for one.

        The lease is released when this connection drops, unless ``detach`` (then only
        its timeout ends it, so another connection can ack it later)."""
        params: dict[str, Any] = {"timeout": timeout, "wait": wait, "detach": detach}
        if kinds is not None:
            params["kinds"] = list(kinds)
        result: dict[str, Any] | None = await self.call("lease", params)
        return result

    async def ack(self, lease_id: int | str) -> None:
        await self.call("ack", {"lease_id": lease_id})

    async def release(self, lease_id: int | str) -> None:
        await self.call("release", {"lease_id": lease_id})

    async def subscribe(
        self, credit: int = 16, lease_timeout: float = 30.0, kinds: Sequence[str] | None = None
    ) -> Subscription:
        """Pushes of leased messages (only of ``kinds``, kind names, if given)."""
        params: dict[str, Any] = {"credit": credit, "lease_timeout": lease_timeout}
        if kinds is not None:
            params["kinds"] = list(kinds)
        result = await self.call("subscribe", params)
        sub = Subscription(self, int(result["subscription"]))
        self._subscriptions[sub.id] = sub
        for early in self._early.pop(sub.id, []):
            sub.queue.put_nowait(early)
        return sub

    async def depth(self) -> int:
        """Messages held (ready + leased); :meth:`depth_detail` has the breakdown."""
        result = await self.depth_detail()
        return int(result["total"])

    async def depth_detail(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("depth")
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("stats")
        return result

    async def tier(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("tier")
        return result


class _Connect:
    """``await QueueClient.connect(...)`` or ``async with QueueClient.connect(...)``."""

    def __init__(self, opening: Any) -> None:
        self._opening = opening
        self._client: QueueClient | None = None

    def __await__(self) -> Any:
        return self._opening.__await__()

    async def __aenter__(self) -> QueueClient:
        self._client = await self._opening
        return self._client

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()
