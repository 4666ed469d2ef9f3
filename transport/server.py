"""The queue service over post-quantum SSH (SPEC §5.3): asyncssh glue.

``start_queue_server(queue, settings)`` listens; each authenticated connection may open
``qssh-queue`` subsystem channels (framed request/reply, see ``docs/protocol.md``) or
run one-shot ``stats`` / ``depth`` / ``tier`` exec commands answered as JSON.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import orjson
from asyncssh.constants import MSG_KEXINIT

from sidecar.errors import ErrorCode, SidecarError, Unavailable
from transport import event_loop
from transport.admission import ConnectionAdmission, Ending, Refusal
from transport.auth import DEFAULT_USERNAME, AuthorizedKeys, Principal, Role, username_allowed
from transport.coalesce import write_as_one
from transport.ignore_packets import skip_ignore_packets
from transport.limits import ServiceLimits, SubmitBucket, WaitingLeases
from transport.negotiation_log import describe, mismatch, parse_kexinit
from transport.output_bound import bound_output
from transport.protocol import (
    EventName,
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    Request,
    encode_error,
    encode_event,
    encode_result,
    parse_request,
)
from transport.qkd import QKDSettings
from transport.queue_port import QueuePort
from transport.refusal_log import RefusalLog
from transport.server_sealing import ServerSealing
from transport.service import ChannelState, QueueService, TierInfo
from transport.ssh_algorithms import (
    PQSSHKey,
    canonical_name,
    registered_algorithms,
    under_every_name,
)
from transport.ssh_options import ssh_options_for_tier
from transport.tiers import DEFAULT_POLICY, TierPolicy, effective_tier

log = logging.getLogger(__name__)

NEGOTIATION = "negotiation failed"  # the reason a failed algorithm negotiation is counted as

SUBSYSTEM = "qssh-queue"
# exit-status of a qssh-queue channel (OpenSSH-family clients exit with it; sysexits.h)
EXIT_CLEAN = 0  # the client ended the channel and every reply was written
EXIT_PROTOCOL_ERROR = 76  # EX_PROTOCOL: closed for what the client sent (frame, sealing)
EXIT_SHUTDOWN = 75  # EX_TEMPFAIL: the server is shutting down; reconnect later
EXEC_COMMANDS: dict[str, Role | None] = {"depth": None, "stats": Role.ADMIN, "tier": Role.ADMIN}
# Methods that wait only on the log's futures (a batch's fsync, an id reservation), never
# on a timeout: a request of these waits parked on that future, without a task of its own.
# Replies held for one channel write beyond this go out at once: uvloop (libuv) reads
# up to 32 socket chunks per wake-up before any call_soon runs, so a peer that sends
# megabytes of requests and reads nothing must meet the flow control (the channel's
# pause_writing, and the connection's: transport/output_bound.py) while its requests
# are still being read, not after.
OUTBOX_FLUSH_BYTES = 64 * 1024
LOG_WAITS = frozenset({"submit", "submit_batch", "pop", "ack", "release"})
# asyncssh's SSHServerConnection method each public key request goes through: the
# key (our validate_public_key), then the signature if the request carries one
_VALIDATE_PUBLIC_KEY = "validate_public_key"
# asyncssh's table of the packet handlers of SSHConnection (looked up on the instance)
_PACKET_HANDLERS = "_packet_handlers"

__all__ = [
    "EXEC_COMMANDS",
    "EXIT_CLEAN",
    "EXIT_PROTOCOL_ERROR",
    "EXIT_SHUTDOWN",
    "SUBSYSTEM",
    "QueueServer",
    "ServerSettings",
    "ServiceLimits",
    "TierInfo",
    "start_queue_server",
]


@dataclass(frozen=True)
class ServerSettings:
    """Where and how the queue service listens.

    ``host_keys`` are already loaded keys (e.g. Falcon keys from the pq key module)
    and are used in addition to ``host_key_paths``; all must be post-quantum (a
    classical one makes ``start()`` raise ValueError). ``tier`` is a fixed tier, or
    ``tier_provider`` gives the live one (the daemon wires the hardware tier there);
    when it changes, call ``QueueServer.tier_changed()`` (channels keep their effective
    tier until then).
    ``ssh_options`` overrides/extends the per-tier algorithm options. ``policy`` holds
    the value thresholds and per-tier host-key sets; ``qkd`` (a KME client and this
    server's SAE id) lets clients seal their channel at tier 4.
    """

    host: str = "127.0.0.1"
    port: int = 0
    host_key_paths: tuple[Path, ...] = ()
    authorized_keys_path: Path = Path("authorized_keys")
    # the keys already read from that file (else the server reads it itself)
    authorized_keys: AuthorizedKeys | None = None
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    tier: int = 2
    tier_provider: Callable[[], TierInfo] | None = None
    host_keys: tuple[asyncssh.SSHKey, ...] = ()
    ssh_options: dict[str, Any] = field(default_factory=dict)
    server_version: str = "qssh-sidecar"
    policy: TierPolicy = DEFAULT_POLICY
    qkd: QKDSettings | None = None
    # the daemon's links to its peers, for the admin ``peers`` method (docs/relay.md)
    peers: Callable[[], list[dict[str, Any]]] = list

    def current_tier(self) -> TierInfo:
        if self.tier_provider is not None:
            return self.tier_provider()
        return TierInfo(self.tier)


_SHOWN_USER = 64  # characters of a refused username a log line shows


def _shown_user(username: str) -> str:
    """A username a stranger chose, for a log line: quoted and escaped (``repr``), and
    cut, since SSH bounds it only by the packet size."""
    if len(username) <= _SHOWN_USER:
        return repr(username)
    return f"{username[:_SHOWN_USER]!r}… ({len(username)} characters)"


def _address(conn: asyncssh.SSHServerConnection) -> str:
    peer = conn.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"


class _QueueSession(asyncssh.SSHServerSession[bytes]):
    """One SSH channel: the ``qssh-queue`` subsystem or an exec command."""

    def __init__(
        self,
        server: QueueServer,
        principal: Principal,
        bucket: SubmitBucket,
        conn: asyncssh.SSHServerConnection,
        on_close: Callable[[], None],
        *,
        waiting: WaitingLeases,
    ) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._on_close = on_close
        self._principal = principal
        self._conn = conn
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._decoder = FrameDecoder(server.settings.limits.max_frame_bytes)
        self._exec: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._parked = 0  # requests waiting on a log future without a task (`_park`)
        self._settled: asyncio.Future[None] | None = None  # `drain` waits on it
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._eof = False
        self._closed = False
        self._sealing = ServerSealing(
            server.settings.qkd,
            conn,
            write=self._write,
            deliver=self._frame_received,
            close=self._close_sealed,
            spawn=self._spawn,
            changed=self._sealing_changed,
            max_held=server.settings.limits.max_in_flight_per_channel,
            who=f"{principal.submitted_by} from {_address(conn)}",
        )
        self._state = ChannelState(
            principal, bucket, self._push, session_tier=self.session_tier, waiting=waiting
        )
        self._state.session_detail.update(self._algorithms())
        self._notified_level: int | None = None

    # ----- the session tier

    def _algorithms(self) -> dict[str, Any]:
        conn = self._conn
        host = conn.get_server_host_key()
        return {
            "cipher": conn.get_extra_info("send_cipher"),
            "recv_cipher": conn.get_extra_info("recv_cipher"),
            # the standard name, also when the client chose an alias (tier policy uses it)
            "host_key": None if host is None else canonical_name(host.algorithm.decode()),
            "user_key": self._principal.key_algorithm,
        }

    def session_tier(self) -> TierInfo:
        d = self._state.session_detail
        ciphers = [c for c in (d.get("cipher"), d.get("recv_cipher")) if isinstance(c, str)]
        info = self._server.settings.policy.session_tier(
            ciphers=ciphers, host_key_alg=d.get("host_key"), sealed=self._sealing.sealed
        )
        if self._sealing.failure is not None:
            info = TierInfo(info.level, (*info.reasons, f"QKD: {self._sealing.failure}"))
        return info

    def _sealing_changed(self) -> None:
        s = self._sealing
        self._state.tier_moved()
        self._state.session_detail.update(
            {"sealed": s.sealed, "epoch": s.epoch, "rekeys": s.rekeys, "qkd_failure": s.failure}
        )
        # the client learns of its own sealing from the exchange, not from a notice
        self._notified_level = self.effective_level()

    def effective_level(self) -> int:
        return self._server.service.effective(self._state).level

    def tier_changed(self, node: TierInfo) -> None:
        """Push a ``tier_changed`` notice when this channel's effective tier moved."""
        self._state.tier_moved()
        if self._exec is not None or self._closed:
            return
        before = self._notified_level
        session = self.session_tier()
        effective = effective_tier(node, session)
        if before is not None and before == effective.level:
            return
        self._notified_level = effective.level
        self._push(
            EventName.TIER_CHANGED,
            {
                "tier": effective.level,
                "previous": before,
                "name": effective.name,
                "reasons": list(effective.reasons),
                "node": node.to_wire(),
                "session": session.to_wire(),
            },
        )

    def _close_sealed(self, reason: str) -> None:
        self._close_after_flush(EXIT_PROTOCOL_ERROR)

    # ----- asyncssh callbacks

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, *args: Any) -> bool:
        return False

    def shell_requested(self) -> bool:
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != SUBSYSTEM:
            return False
        self._server._sessions.add(self)
        self._notified_level = self.effective_level()
        return True

    def exec_requested(self, command: str) -> bool:
        self._exec = command.strip()
        return True

    def session_started(self) -> None:
        if self._exec is not None:
            self._spawn(self._run_exec(self._exec))

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self._exec is not None or self._closed:
            return
        try:
            frames = self._decoder.feed(data)
        except FrameTooLarge as exc:
            self._write(encode_error(None, exc.code, exc.message))
            self._close_after_flush(EXIT_PROTOCOL_ERROR)
            return
        for body in frames:
            self._sealing.incoming(body)

    def eof_received(self) -> bool:
        self._eof = True
        if self._decoder.pending_bytes:
            log.info("channel of %s ended inside a frame", self._principal.submitted_by)
        self._maybe_finish()
        return True  # keep our side open until in-flight replies are written

    def pause_writing(self) -> None:
        # A peer that does not read what we send: stop reading its requests and stop
        # its subscriptions' pushes until our output drains, so the send buffer (and
        # what its subscriptions hold) stays bounded.
        self._state.pause_pushes()
        if self._chan is not None and not self._closed:
            self._chan.pause_reading()

    def resume_writing(self) -> None:
        self._state.resume_pushes()
        if self._chan is not None and not self._closed:
            self._chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._on_close()
        self._server._sessions.discard(self)
        self._server._spawn_background(self._state.close(self._server.queue))

    # ----- requests

    def _frame_received(self, body: bytes) -> None:
        server = self._server
        try:
            request = parse_request(body)
        except ProtocolError as exc:
            server.service.counters.errors += 1
            self._write(encode_error(exc.request_id, exc.code, exc.message))
            return
        if server.closing:
            self._reply_error(request, Unavailable("server is shutting down; reconnect later"))
            return
        if len(self._in_flight) + self._parked >= server.settings.limits.max_in_flight_per_channel:
            limit = server.settings.limits.max_in_flight_per_channel
            self._reply_error(
                request,
                Unavailable(f"too many requests in flight on this channel (limit {limit})"),
            )
            return
        self._dispatch(self._handle(request), request.method in LOG_WAITS)

    def _dispatch(self, coro: Coroutine[Any, Any, None], log_waits: bool) -> None:
        """Run a request at once. Most requests never wait; one that waits on the log
        (a sync submit's fsync) is parked on that future and goes on from the batch's
        completion (`QueueServer._wake`); any other wait (a lease's) goes on as a task.
        A task per request was a large part of the server's CPU."""
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return  # answered without waiting
        self._suspended(coro, waiting_on, log_waits)

    def _suspended(self, coro: Coroutine[Any, Any, None], waiting_on: Any, log_waits: bool) -> None:
        if waiting_on is not None:
            # taken, as a task takes what it waits on: the next request that awaits
            # the same future (a batch's) must find it free
            waiting_on._asyncio_future_blocking = False
        if (
            log_waits
            and type(waiting_on) is not asyncio.Task
            and isinstance(waiting_on, asyncio.Future)
        ):
            self._parked += 1
            self._server.park(waiting_on, self, coro)
        else:
            self._spawn(_resume(coro, waiting_on))

    def go_on(self, coro: Coroutine[Any, Any, None]) -> None:
        """Resume a parked request: the future it waited on is done."""
        self._parked -= 1
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            self._maybe_finish()
            return
        except BaseException as exc:  # only a cancelled future gets here: _handle logs the rest
            if not isinstance(exc, asyncio.CancelledError):
                log.error("request failed", exc_info=exc)
            self._maybe_finish()
            return
        self._suspended(coro, waiting_on, True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._in_flight.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request task failed", exc_info=task.exception())
        self._maybe_finish()

    async def _handle(self, request: Request) -> None:
        try:
            result = await self._server.service.call(self._state, request)
        except SidecarError as exc:
            self._reply_error(request, exc)
            return
        except Exception:
            log.exception("method %s failed", request.method)
            self._server.service.counters.errors += 1
            self._write(encode_error(request.id, ErrorCode.INTERNAL, "internal error (logged)"))
            return
        self._write(encode_result(request.id, result))

    def _reply_error(self, request: Request, exc: SidecarError) -> None:
        self._server.service.counters.errors += 1
        self._write(encode_error(request.id, exc.code, exc.message))

    async def _run_exec(self, command: str) -> None:
        chan = self._chan
        assert chan is not None
        if command not in EXEC_COMMANDS:
            known = ", ".join(sorted(EXEC_COMMANDS))
            error = {"code": ErrorCode.BAD_REQUEST.value, "message": f"commands: {known}"}
            chan.write_stderr(orjson.dumps({"error": error}) + b"\n")
            chan.exit(127)
            return
        role = EXEC_COMMANDS[command]
        service = self._server.service
        status = 0
        try:
            if role is not None:
                self._principal.require(role, command)
            if command == "depth":
                result: Any = service.depth_snapshot()
            elif command == "tier":
                result = service.tier_view(self._state)
            else:
                result = service.stats_snapshot()
            chan.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        except SidecarError as exc:
            chan.write_stderr(orjson.dumps({"error": exc.to_wire()}) + b"\n")
            status = 1
        chan.exit(status)

    # ----- output

    def _push(self, event: str, data: dict[str, Any]) -> None:
        self._write(encode_event(event, data))

    def _write(self, frame: bytes) -> None:
        # Replies finished in the same loop turn (a group commit answers many submits
        # at once) go out as one channel write: one SSH packet instead of one each.
        if self._closed:
            return
        out = self._sealing.outgoing(frame)
        self._outbox.append(out)
        self._outbox_bytes += len(out)
        if self._outbox_bytes >= OUTBOX_FLUSH_BYTES:
            self._flush()
        elif len(self._outbox) == 1 and not self._server.flush_later(self):
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        chan = self._chan
        frames, self._outbox = self._outbox, []
        self._outbox_bytes = 0
        if not frames or chan is None or chan.is_closing():
            return
        try:
            write_as_one(self._conn, chan, b"".join(frames))
        except (BrokenPipeError, OSError):
            self._closed = True

    def _close_after_flush(self, status: int) -> None:
        """Write what is queued, send ``status`` as the channel's exit-status, close."""
        self._flush()
        self._closed = True
        chan = self._chan
        if chan is None or chan.is_closing():
            return
        if self._exec is None:
            chan.exit(status)
        else:
            chan.close()  # an exec channel has already sent its own status

    def _maybe_finish(self) -> None:
        if self._in_flight or self._parked:
            return
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)
        if self._exec is None and self._eof and not self._closed:
            self._close_after_flush(EXIT_CLEAN)

    async def drain(self) -> None:
        """Wait for the replies of requests already accepted."""
        while self._in_flight or self._parked:
            self._settled = self._loop.create_future()
            await self._settled

    def close(self) -> None:
        self._close_after_flush(EXIT_SHUTDOWN)


async def _resume(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Go on with `coro`, started outside a task, from where it suspended."""
    await _Resumed(coro, waiting_on)


class _Resumed:
    """Awaiting this continues a coroutine that already ran up to its first wait:
    what `await coro` would do, minus the first step. The task running it waits on
    what the coroutine yielded (an asyncio future, or None for a bare yield)."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting_on = self._coro, self._waiting_on
        if waiting_on is not None:
            waiting_on._asyncio_future_blocking = True  # as Future.__await__ yields it
        while True:
            try:
                sent = yield waiting_on
            except BaseException as exc:  # a cancellation: hand it to the coroutine
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = coro.send(sent)
                except StopIteration:
                    return


class _QueueSSHServer(asyncssh.SSHServer):
    """One TCP connection: admission, authentication by key, then channels."""

    def __init__(self, server: QueueServer) -> None:
        self._server = server
        self._conn: asyncssh.SSHServerConnection | None = None
        self._source = ""
        self._peer = ""  # address:port
        self._phase = _Phase.REFUSED
        self._ending = Ending.NOAUTH
        self._auth_refusal: tuple[Refusal, str] | None = None
        self._grace: asyncio.TimerHandle | None = None
        # the principal of the key last accepted: pending until auth_completed (the
        # signature is verified by asyncssh after validate_public_key says yes)
        self._pending: Principal | None = None
        self._principal: Principal | None = None
        self._auth_tries = 0  # keys tried (a query and its signed request: one try)
        self._signed: bool | None = None  # the request being validated is signed (or unknown)
        self._queried: bytes | None = None  # the key an unsigned query was just accepted for
        self._channels = 0
        limits = server.settings.limits
        self._bucket = SubmitBucket(limits.submits_per_second, limits.submit_burst)
        self._waiting = WaitingLeases(limits)

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        server = self._server
        peer = conn.get_extra_info("peername")
        self._source = str(peer[0]) if peer else "unknown"
        self._peer = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        refusal = server.admission.arrive(self._source)
        if refusal is not None:
            server.refused(refusal, source=self._source)
            conn.abort()  # before our version line: a refused stranger costs a close
            return
        skip_ignore_packets(conn)
        self._watch_auth_requests(conn)
        self._one_key_exchange_before_auth(conn)
        if not bound_output(conn):
            log.warning(
                "asyncssh keeps no transport where expected: output per connection "
                "is bounded by the channels' flow control only"
            )
        self._phase = _Phase.STARTUP
        grace = server.settings.limits.admission.login_grace_seconds
        self._grace = asyncio.get_running_loop().call_later(grace, self._grace_exceeded)
        server._connections.add(conn)

    def _grace_exceeded(self) -> None:
        self._grace = None
        if self._phase is _Phase.STARTUP and self._conn is not None:
            self._ending = Ending.GRACE_EXCEEDED
            self._conn.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if self._conn is not None:
            self._server._connections.discard(self._conn)
            self._negotiation_ended(self._conn, exc)
        if self._phase is _Phase.STARTUP:
            self._server.admission.gone(self._source, self._ending)
            if self._auth_refusal is not None:  # only if it never got in with another key
                self._server.refused(*self._auth_refusal, source=self._source)
        elif self._phase is _Phase.SESSION:
            self._server.admission.gone(self._source, Ending.AUTHENTICATED)
        self._phase = _Phase.ENDED

    def _negotiation_ended(self, conn: asyncssh.SSHServerConnection, exc: Exception | None) -> None:
        """Report a failed algorithm negotiation: asyncssh's own verdict, or ours when
        the peer hung up first (OpenSSH closes as soon as it sees no match)."""
        if self._phase is not _Phase.STARTUP:
            return
        # asyncssh keeps both KEXINIT payloads (it hashes them into the session)
        theirs = parse_kexinit(getattr(conn, "_client_kexinit", None))
        ours = parse_kexinit(getattr(conn, "_server_kexinit", None))
        reason = str(exc) if isinstance(exc, asyncssh.KeyExchangeFailed) else mismatch(theirs, ours)
        if reason is not None:
            self._server.negotiation_failed(
                describe(self._peer, reason, theirs, ours), source=self._source
            )

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def _one_key_exchange_before_auth(self, conn: asyncssh.SSHServerConnection) -> bool:
        """Before authentication only the first key exchange: each one costs a host-key
        signature (a SPHINCS+ one is tens of ms) and a decapsulation, so a second
        KEXINIT from a client not yet in closes the connection (a protocol error,
        refused as ``rekey``). Re-keying after authentication is unchanged. False (and
        nothing changed) if asyncssh keeps its packet handlers elsewhere now."""
        handlers = getattr(conn, _PACKET_HANDLERS, None)
        process = handlers.get(MSG_KEXINIT) if isinstance(handlers, dict) else None
        if handlers is None or process is None:
            return False
        seen = False

        def kexinit(c: Any, pkttype: int, pktid: int, packet: Any) -> Any:
            nonlocal seen
            if seen and self._phase is not _Phase.SESSION:
                self._auth_refusal = (Refusal.REKEY, "key re-exchange before authentication")
                raise asyncssh.ProtocolError("key re-exchange before authentication")
            seen = True
            return process(c, pkttype, pktid, packet)

        setattr(conn, _PACKET_HANDLERS, {**handlers, MSG_KEXINIT: kexinit})
        return True

    def _watch_auth_requests(self, conn: asyncssh.SSHServerConnection) -> None:
        """Learn whether each public key request is signed: asyncssh's connection
        method that every one goes through (the key, then the signature) is told. If
        asyncssh has none any more, nothing changes there and every request counts as
        a try of its own (stricter than OpenSSH for a query and its signed request)."""
        validate = getattr(conn, _VALIDATE_PUBLIC_KEY, None)
        if validate is None or not asyncio.iscoroutinefunction(validate):
            return

        async def validate_public_key(
            username: str, key_data: bytes, msg: bytes, signature: bytes
        ) -> bool:
            self._signed = bool(msg)
            try:
                return bool(await validate(username, key_data, msg, signature))
            finally:
                self._signed = None

        setattr(conn, _VALIDATE_PUBLIC_KEY, validate_public_key)

    def _count_try(self, key: asyncssh.SSHKey) -> bool:
        """One more key tried (OpenSSH's MaxAuthTries); false once there are too many.
        A signed request for the key a query was just accepted for is the same try."""
        data = key.public_data
        follow_up = self._signed is True and self._queried == data
        self._queried = data if self._signed is False else None
        if follow_up:
            return True
        self._auth_tries += 1
        return self._auth_tries <= self._server.settings.limits.admission.max_auth_tries

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # once a key is offered, a connection that never gets in failed authentication
        self._ending = Ending.AUTHFAIL
        self._pending = None
        if not self._count_try(key):
            self._queried = None
            self._auth_refusal = (
                Refusal.AUTH_TRIES,
                f"more than {self._server.settings.limits.admission.max_auth_tries} keys tried "
                "on one connection",
            )
            if self._conn is not None:
                asyncio.get_running_loop().call_soon(
                    self._conn.disconnect,
                    asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                    "too many authentication failures",
                )
            return False
        entry = self._server.authorized_keys.lookup_from(key, self._source)
        if entry is None:
            self._auth_refusal = (
                Refusal.KEY,
                f"key {key.get_fingerprint()} as user {_shown_user(username)} is not authorized",
            )
            return False
        if not username_allowed(username, entry.principal):
            self._auth_refusal = (
                Refusal.USERNAME,
                f"user {_shown_user(username)} with key {entry.fingerprint} "
                f"of {entry.principal!r}: "
                f"the SSH username must be empty, {entry.principal!r} or {DEFAULT_USERNAME!r}",
            )
            return False
        # asyncssh checks the signature after this: until auth_completed, the key was
        # only offered (a stranger may know any authorized public key)
        self._auth_refusal = (
            Refusal.SIGNATURE,
            f"key {entry.fingerprint} of {entry.principal!r} as user {_shown_user(username)} "
            "offered, never with a valid signature",
        )
        self._pending = Principal(
            username, entry.fingerprint, key.algorithm.decode(), entry.roles, entry.principal
        )
        return True

    def auth_completed(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._principal, self._pending = self._pending, None
        server = self._server
        if not server.admission.authenticated(self._source):
            self._phase = _Phase.REFUSED
            server.refused(Refusal.SESSIONS, source=self._source)
            if self._conn is not None:
                asyncio.get_running_loop().call_soon(
                    self._conn.disconnect,
                    asyncssh.DISC_TOO_MANY_CONNECTIONS,
                    "too many connections to the queue service",
                )
            return
        self._phase = _Phase.SESSION
        if self._principal is not None:
            log.info(
                "accepted %s from %s roles=%s",
                self._principal.submitted_by,
                self._source,
                ",".join(sorted(r.value for r in self._principal.roles)),
            )

    def session_requested(self) -> asyncssh.SSHServerSession[bytes] | bool:
        if self._principal is None or self._phase is not _Phase.SESSION:
            return False
        if self._channels >= self._server.settings.limits.max_channels_per_connection:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE, "too many channels on this connection"
            )
        self._channels += 1
        assert self._conn is not None
        return _QueueSession(
            self._server,
            self._principal,
            self._bucket,
            self._conn,
            self._channel_closed,
            waiting=self._waiting,
        )

    def _channel_closed(self) -> None:
        # the limit is on channels open at once, not on every channel ever opened
        self._channels -= 1


class _Phase(enum.Enum):
    REFUSED = "refused"  # never admitted, or refused after authenticating
    STARTUP = "startup"  # admitted, not yet authenticated
    SESSION = "session"  # authenticated, holding a session slot
    ENDED = "ended"


class QueueServer:
    """A listening queue service. ``close()`` stops accepting, drains, disconnects."""

    def __init__(self, queue: QueuePort, settings: ServerSettings) -> None:
        self.queue = queue
        self.settings = settings
        given = settings.authorized_keys
        self.authorized_keys = (
            given if given is not None else AuthorizedKeys(settings.authorized_keys_path)
        )
        self.service = QueueService(
            queue,
            settings.limits,
            settings.current_tier,
            self._server_stats,
            settings.policy,
            peers=settings.peers,
        )
        self.admission = ConnectionAdmission(
            settings.limits.admission, settings.limits.max_connections
        )
        self.refusals = RefusalLog(settings.limits.admission.refusal_log_seconds)
        self.refused_by_reason: Counter[str] = Counter()
        self._refusal_timer: asyncio.TimerHandle | None = None
        # failed algorithm negotiations: INFO, at the same bounded rate as refusals
        self.negotiation_failures = RefusalLog(settings.limits.admission.refusal_log_seconds)
        self._negotiation_timer: asyncio.TimerHandle | None = None
        self.closing = False
        self._listener: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._sessions: set[_QueueSession] = set()
        # requests parked on a log future, by future: all resumed in one pass
        self._parked: dict[asyncio.Future[Any], list[tuple[_QueueSession, Any]]] = {}
        self._waking = False
        self._to_flush: list[_QueueSession] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._listener is not None
        return self._listener.get_port()

    def refused(self, reason: Refusal, detail: str = "", *, source: str) -> None:
        """Count a refused connection; logged at a bounded rate (``RefusalLog``)."""
        self.refused_by_reason[reason.value] += 1
        line = self.refusals.note(reason.value, source, detail)
        if line is not None:
            log.warning(line)
        if self.refusals.open and self._refusal_timer is None:
            self._refusal_timer = asyncio.get_running_loop().call_later(
                self.refusals.interval, self._flush_refusals
            )

    def _flush_refusals(self) -> None:
        self._refusal_timer = None
        penalized = self.admission.penalized_sources()
        line = self.refusals.flush(f"{penalized} addresses penalized" if penalized else "")
        if line is not None:
            log.warning(line)
        if self.refusals.open:
            self._refusal_timer = asyncio.get_running_loop().call_later(
                self.refusals.interval, self._flush_refusals
            )

    def negotiation_failed(self, detail: str, *, source: str) -> None:
        """A client shared no algorithm with us: log who, why and both lists (INFO),
        one line then one summary per interval (``RefusalLog``)."""
        self.refused_by_reason[NEGOTIATION] += 1
        line = self.negotiation_failures.note(NEGOTIATION, source, detail)
        if line is not None:
            log.info(line)
        if self.negotiation_failures.open and self._negotiation_timer is None:
            self._negotiation_timer = asyncio.get_running_loop().call_later(
                self.negotiation_failures.interval, self._flush_negotiation_failures
            )

    def _flush_negotiation_failures(self) -> None:
        self._negotiation_timer = None
        line = self.negotiation_failures.flush()
        if line is not None:
            log.info(line)
        if self.negotiation_failures.open:
            self._negotiation_timer = asyncio.get_running_loop().call_later(
                self.negotiation_failures.interval, self._flush_negotiation_failures
            )

    def _server_stats(self) -> dict[str, Any]:
        sealed = [s._sealing for s in self._sessions]
        return {
            "event_loop": event_loop.running(),
            "connections": self.admission.sessions,
            "unauthenticated": self.admission.unauthenticated,
            "penalized_sources": self.admission.penalized_sources(),
            "refused": dict(self.refused_by_reason),
            "channels": len(self._sessions),
            "sealed_channels": sum(1 for s in sealed if s.sealed),
            "sealed_frames_out": sum(s.frames_sealed for s in sealed),
            "sealed_frames_in": sum(s.frames_opened for s in sealed),
            "rekeys": sum(s.rekeys for s in sealed),
        }

    def park(self, fut: asyncio.Future[Any], session: _QueueSession, coro: Any) -> None:
        """Resume `coro` on `session` once `fut` is done: one callback per future (a
        batch's), however many requests wait on it."""
        waiters = self._parked.get(fut)
        if waiters is None:
            waiters = self._parked[fut] = []
            fut.add_done_callback(self._wake)
        waiters.append((session, coro))

    def _wake(self, fut: asyncio.Future[Any]) -> None:
        """Resume every request parked on `fut`, then write each channel's replies
        at once: a batch's replies leave in the pass that learns of its fsync."""
        waiters = self._parked.pop(fut)
        self._waking = True
        try:
            for session, coro in waiters:
                session.go_on(coro)
        finally:
            self._waking = False
            sessions, self._to_flush = self._to_flush, []
            for session in sessions:
                session._flush()

    def flush_later(self, session: _QueueSession) -> bool:
        """Whether `session`'s output will be written at the end of this wake pass."""
        if self._waking:
            self._to_flush.append(session)
        return self._waking

    def tier_changed(self) -> None:
        """The node tier changed: tell every channel whose effective tier moved."""
        node = self.settings.current_tier()
        for session in list(self._sessions):
            session.tier_changed(node)

    def _spawn_background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        s = self.settings
        loaded = [*s.host_keys, *(asyncssh.read_private_key(p) for p in s.host_key_paths)]
        sources = [
            *(f"host key {i + 1}" for i in range(len(s.host_keys))),
            *map(str, s.host_key_paths),
        ]
        for key, source in zip(loaded, sources, strict=True):
            if not isinstance(key, PQSSHKey):  # no session is ever authenticated classically
                raise ValueError(
                    f"{source} is a {key.get_algorithm()} key; the queue server presents "
                    f"post-quantum host keys only ({', '.join(registered_algorithms())})"
                )
        host_keys = under_every_name(loaded)
        if not host_keys:
            raise ValueError("the queue server needs at least one host key")
        options: dict[str, Any] = {
            **ssh_options_for_tier(s.current_tier().level, "server"),
            **s.ssh_options,
        }
        self._listener = await asyncssh.listen(
            s.host,
            s.port,
            server_factory=lambda: _QueueSSHServer(self),
            server_host_keys=host_keys,
            encoding=None,
            line_editor=False,
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            # our own timer ends the login grace time (and charges the address);
            # asyncssh's is only the backstop
            login_timeout=s.limits.admission.login_grace_seconds + 5,
            server_version=s.server_version,
            **options,
        )
        log.debug("queue service listening on %s:%d", s.host, self.port)

    async def close(self) -> None:
        """Stop accepting, answer what is in flight, release leases, disconnect."""
        if self.closing:
            await self._closed.wait()
            return
        self.closing = True
        if self._listener is not None:
            self._listener.close()
        if self._refusal_timer is not None:
            self._refusal_timer.cancel()
            self._flush_refusals()
            if self._refusal_timer is not None:
                self._refusal_timer.cancel()
                self._refusal_timer = None
        if self._negotiation_timer is not None:
            self._negotiation_timer.cancel()
            self._negotiation_timer = None
            line = self.negotiation_failures.flush()
            if line is not None:
                log.info(line)
        sessions = list(self._sessions)
        if sessions:
            drain = asyncio.gather(*(s.drain() for s in sessions))
            try:
                await asyncio.wait_for(drain, self.settings.limits.drain_seconds)
            except TimeoutError:
                log.warning("in-flight requests still running after drain timeout")
        for session in sessions:
            session.close()
        for conn in list(self._connections):
            conn.close()
        for conn in list(self._connections):
            await conn.wait_closed()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._listener is not None:
            await self._listener.wait_closed()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> QueueServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_queue_server(queue: QueuePort, settings: ServerSettings) -> QueueServer:
    server = QueueServer(queue, settings)
    await server.start()
    return server
