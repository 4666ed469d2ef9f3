"""The node endpoint's transports: HTTP and WebSocket on one port (aiohttp), and on
the unix socket HTTP, WebSocket and newline-delimited JSON-RPC.

The unix socket tells its two framings apart by the first byte a client sends: ``{``,
``[`` or whitespace is newline JSON, anything else is handed to aiohttp's HTTP
parser (which also upgrades to WebSocket). TCP is always HTTP.

A connection that can carry notifications (WebSocket, newline JSON) is a
:class:`Session`. Its writes are awaited, so a client that stops reading stops its
subscriptions at the next notification: nothing is queued for it beyond aiohttp's
and the kernel's bounded buffers, and the leases it holds run out like an SSH
subscriber's. Who holds which lease is decided in ``node_subscriptions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import grp
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, cast

from aiohttp import WSMsgType, web

from sidecar.errors import SidecarError
from sidecar.messages import Kind

from .config import Endpoint, NodeEndpoint
from .node_rpc import (
    INVALID_REQUEST,
    MESSAGE_NOTIFICATION,
    SERVER_ERROR,
    TIER_NOTIFICATION,
    NodeBackend,
    NodeRpc,
    RpcError,
    SubscriptionLimits,
    error_body,
    notification,
)
from .node_subscriptions import (
    ConnectionSubscriptions,
    LeaseOwners,
    MessageSubscription,
    TooManySubscriptions,
)

log = logging.getLogger(__name__)

JSON = "application/json"
LINE_START = frozenset(b"{[ \t\r\n")
# Connections over node.max_connections held at once to be told why (503, or a -32000
# line), each for node.first_request_timeout at most; one more is closed at once,
# without a reply.
REFUSE_AT_MOST = 8
READ_CHUNK = 64 * 1024  # newline JSON is read this much at a time
IDLE_WAIT = 1.0  # re-check for a message this often while the queue looks empty


class EndpointBackend(NodeBackend, Protocol):
    """What the transports need beyond the methods: health, the tier, waiting."""

    def node_health(self) -> dict[str, Any]: ...

    def node_tier(self) -> dict[str, Any]: ...

    async def node_wait_available(
        self,
        timeout: float,  # noqa: ASYNC109
        kinds: frozenset[Kind] | None = None,
    ) -> bool: ...


# The subscriptions a request created: started once its reply has been sent, so the
# subscription id always reaches the client before the first notification.
_created: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar(
    "node_subscriptions_created", default=None
)


class Session:
    """One WebSocket or newline-JSON connection: its subscriptions and its writer."""

    def __init__(
        self, endpoint: NodeEndpointServer, write: Callable[[bytes], Awaitable[None]]
    ) -> None:
        self.endpoint = endpoint
        self._write = write
        self._send_lock = asyncio.Lock()
        self.subs = ConnectionSubscriptions(endpoint.settings.max_subscriptions)
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._slot_freed: dict[str, asyncio.Event] = {}
        self._tier_sent: dict[str, int] = {}  # tier subscription -> version sent
        self._tier_wake = asyncio.Event()
        self._tier_task: asyncio.Task[None] | None = None
        self.busy: set[asyncio.Task[Any]] = set()
        self.reader: asyncio.Task[Any] | None = None
        self.closed = False

    async def send(self, data: bytes) -> None:
        async with self._send_lock:
            await self._write(data)

    # ---- NodeSession -------------------------------------------------------------

    def subscribe_messages(
        self, max_unacked: int, lease_timeout: float, kinds: frozenset[Kind] | None
    ) -> str:
        self._check_open()
        sub_id = self.endpoint.new_subscription_id()
        with _subscription_limit():
            self.subs.add_messages(sub_id, max_unacked, lease_timeout, kinds)
        self._slot_freed[sub_id] = asyncio.Event()
        self.endpoint.sessions_by_sub[sub_id] = self
        self._after_reply(lambda: self._start_pump(sub_id))
        return sub_id

    def unsubscribe_messages(self, sub_id: str) -> bool:
        held = self.subs.remove_messages(sub_id)
        if held is None:
            return False
        self._end_pump(sub_id)
        self.endpoint.give_back(held)
        return True

    def subscribe_tier(self) -> str:
        self._check_open()
        sub_id = self.endpoint.new_subscription_id()
        with _subscription_limit():
            self.subs.add_tier(sub_id)
        self._after_reply(lambda: self._start_tier(sub_id))
        return sub_id

    def unsubscribe_tier(self, sub_id: str) -> bool:
        self._tier_sent.pop(sub_id, None)
        return self.subs.remove_tier(sub_id)

    def _check_open(self) -> None:
        """A request still in flight when its connection closed (a batch awaiting an
        fsync) makes no subscription: close() has run and would never end it."""
        if self.closed:
            raise RpcError(SERVER_ERROR, "the connection is closed", {"code": "connection_closed"})

    @staticmethod
    def _after_reply(start: Callable[[], None]) -> None:
        created = _created.get()
        if created is None:  # not inside a request (cannot happen); start now
            start()
        else:
            created.append(start)

    # ---- requests ----------------------------------------------------------------

    async def answer(self, body: bytes) -> None:
        """Answer one message; start the subscriptions it made once the reply is out."""
        created: list[Callable[[], None]] = []
        _created.set(created)
        reply = await self.endpoint.rpc.handle_body(body, self)
        if reply is not None:
            await self.send(reply)
        if not self.closed:
            for start in created:
                start()

    def spawn(self, body: bytes, slots: asyncio.Semaphore) -> None:
        """Answer ``body`` in its own task (replies may overtake each other, as JSON-RPC
        allows); ``slots`` bounds the requests in flight on this connection."""

        async def run() -> None:
            try:
                await self.answer(body)
            except (ConnectionError, RuntimeError):
                pass  # the peer went away; its subscriptions end with the connection
            finally:
                slots.release()

        task = asyncio.get_running_loop().create_task(run())
        self.busy.add(task)
        self.endpoint.busy.add(task)
        task.add_done_callback(self.busy.discard)
        task.add_done_callback(self.endpoint.busy.discard)

    # ---- message subscriptions ---------------------------------------------------

    def _start_pump(self, sub_id: str) -> None:
        sub = self.subs.messages.get(sub_id)
        if sub is not None and sub_id not in self._pumps:
            self._pumps[sub_id] = asyncio.get_running_loop().create_task(self._pump(sub))

    def _end_pump(self, sub_id: str) -> None:
        task = self._pumps.pop(sub_id, None)
        if task is not None:
            task.cancel()
        self._slot_freed.pop(sub_id, None)
        self.endpoint.sessions_by_sub.pop(sub_id, None)

    def slot_freed(self, sub_id: str) -> None:
        event = self._slot_freed.get(sub_id)
        if event is not None:
            event.set()

    async def _pump(self, sub: MessageSubscription) -> None:
        """Lease the next message while the subscription has a free slot, and send it."""
        endpoint = self.endpoint
        backend, owners = endpoint.backend, endpoint.owners
        freed = self._slot_freed[sub.id]
        try:
            while True:
                now = time.monotonic()
                if not owners.has_slot(sub, now):
                    freed.clear()
                    deadline = sub.next_deadline()
                    wait = None if deadline is None else max(deadline - now, 0.0) + 0.001
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await freed.wait()
                    continue
                lease = await backend.node_lease(sub.lease_timeout, sub.kinds)
                if lease is None:
                    await backend.node_wait_available(IDLE_WAIT, sub.kinds)
                    continue
                if self.closed or self.subs.messages.get(sub.id) is not sub:
                    # ended while the lease was being taken: it is nobody's, give it back
                    await backend.node_release(lease.lease_id)
                    return
                owners.delivered(sub, lease.lease_id, lease.deadline)
                await self.send(notification(MESSAGE_NOTIFICATION, sub.id, lease.view))
        except asyncio.CancelledError:
            raise
        except (ConnectionError, RuntimeError):
            pass  # the connection is closing; close() gives the leases back
        except SidecarError as e:
            log.info("node subscription %s ended: %s", sub.id, e.message)

    # ---- tier subscriptions ------------------------------------------------------

    def _start_tier(self, sub_id: str) -> None:
        if sub_id not in self.subs.tier:
            return
        self._tier_sent[sub_id] = -1
        if self._tier_task is None:
            self._tier_task = asyncio.get_running_loop().create_task(self._send_tiers())
        self._tier_wake.set()

    def tier_changed(self) -> None:
        if self._tier_sent:
            self._tier_wake.set()

    async def _send_tiers(self) -> None:
        """Each tier subscription gets the latest tier it has not seen; a reader slower
        than the changes sees the latest one, not every step."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                await self._tier_wake.wait()
                self._tier_wake.clear()
                version, view = self.endpoint.tier()
                for sub_id, sent in list(self._tier_sent.items()):
                    if sent < version and sub_id in self._tier_sent:
                        self._tier_sent[sub_id] = version
                        await self.send(notification(TIER_NOTIFICATION, sub_id, view))

    # ---- end ---------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every subscription and give back the leases it still holds."""
        if self.closed:
            return
        self.closed = True
        for sub_id in list(self._pumps):
            self._end_pump(sub_id)
        for sub_id in list(self.subs.messages):
            self.endpoint.sessions_by_sub.pop(sub_id, None)
        if self._tier_task is not None:
            self._tier_task.cancel()
        self._tier_sent.clear()
        self.endpoint.give_back(self.subs.close())


@contextlib.contextmanager
def _subscription_limit() -> Iterator[None]:
    try:
        yield
    except TooManySubscriptions as e:
        raise RpcError(SERVER_ERROR, str(e), {"code": "too_many_subscriptions"}) from None


class _JsonErrorHandler(web.RequestHandler):
    """aiohttp's connection handler, answering malformed HTTP with a JSON body, and
    closing a connection whose request does not arrive whole in time (aiohttp has no
    such deadline: a partial request head holds its connection until keep-alive ends
    it, a partial body for ever)."""

    on_lost: Callable[[web.RequestHandler], None] | None = None
    request_timeout = NodeEndpoint.first_request_timeout
    _request_deadline: float | None = None  # the request being received ends by then
    _request_timer: asyncio.TimerHandle | None = None

    def expect_request(self, deadline: float) -> None:
        """A request is being received: its head must be in by ``deadline`` (loop time),
        or the connection gets a 408 and is closed; its body has until then too."""
        self._request_deadline = deadline
        self._request_timer = self._loop.call_at(deadline, self._request_timed_out)

    def request_started(self) -> float:
        """Its head is in: stop the head's timer; the deadline its body has."""
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        deadline = self._request_deadline
        self._request_deadline = None
        return deadline if deadline is not None else self._loop.time() + self.request_timeout

    def late(self) -> None:
        """Its body is late (it is answered 408): close once the answer is out, not
        after aiohttp's lingering (10 s more reading what is left of the body)."""
        self._lingering_time = 0.0

    def data_received(self, data: bytes) -> None:
        # The first bytes of a later request on a kept-alive connection (one waiting
        # for its next request): it has request_timeout from now to arrive whole.
        if data and self._request_deadline is None and self._waiter is not None:
            self.expect_request(self._loop.time() + self.request_timeout)
        super().data_received(data)

    def _request_timed_out(self) -> None:
        self._request_timer = None
        transport = self.transport
        if self._request_in_progress or self._messages or transport is None:
            return  # its head has just come in; request_started() gives the deadline
        body = error_body(
            INVALID_REQUEST,
            f"request not complete within node.first_request_timeout = {self.request_timeout:g} s",
            {"http_status": 408},
        )
        if not transport.is_closing():
            # Written by hand: aiohttp answers only a request whose head it has parsed.
            transport.write(
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            _close(transport)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        super().connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost(self)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # A stranger's malformed request is not worth a traceback in the log.
        log.debug("node endpoint: bad HTTP request (%s): %s", status, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started")
        what = "malformed HTTP request" if status < 500 else "internal error"
        resp = _json_error(status, what)
        resp.force_close()
        return resp


def _json_error(status: int, message: str, **headers: str) -> web.Response:
    code = -32603 if status >= 500 and status != 503 else INVALID_REQUEST
    if status == 503:
        code = SERVER_ERROR
    return web.Response(
        status=status,
        body=error_body(code, message, {"http_status": status}),
        content_type=JSON,
        headers=headers,
    )


class NodeEndpointServer:
    """Serves :class:`NodeRpc` on the unix socket and, when configured, on 127.0.0.1."""

    def __init__(
        self,
        backend: EndpointBackend,
        settings: NodeEndpoint | None = None,
        on_call: Callable[[str], None] | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings or NodeEndpoint(socket=None)
        s = self.settings
        self.rpc = NodeRpc(
            backend,
            on_call,
            max_batch=s.max_batch,
            limits=SubscriptionLimits(max_unacked=s.max_unacked),
            on_settled=self._settled,
        )
        self.owners = LeaseOwners()
        self.sessions_by_sub: dict[str, Session] = {}
        self.sessions: set[Session] = set()
        self.busy: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._tier_version = 0
        self._tier_view: dict[str, Any] | None = None
        self._http_server: web.Server | None = None  # made on the loop, when first used
        self._refused: set[web.RequestHandler] = set()
        self.sniffing: set[_Sniffer] = set()  # connected, first bytes not seen yet
        self._line_connections = 0  # newline-JSON connections being served
        self.refusing: set[_Sniffer] = set()  # over the limit, first bytes not seen yet
        self._line_refusals = 0  # newline-JSON connections being told they are refused
        self._servers: list[asyncio.Server] = []
        self._socket_path: Path | None = None
        self._closing = False

    # ---- listening ---------------------------------------------------------------

    async def start_unix(self, path: Path, group: str | None) -> None:
        gid = None
        if group is not None:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise OSError(f"node.socket_group: no group named {group!r}") from None
        _remove_stale_socket(path)
        loop = asyncio.get_running_loop()
        old_umask = os.umask(0o117)  # the socket is born 0660, never briefly wider
        try:
            server = await loop.create_unix_server(lambda: _Sniffer(self, lines=True), str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o660)
        if gid is not None:
            os.chown(path, -1, gid)
        self._servers.append(server)
        self._socket_path = path

    async def start_http(self, endpoint: Endpoint) -> int:
        """Listen on a loopback address (checked by the config); the bound port."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Sniffer(self, lines=False), endpoint.host, endpoint.port
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    @property
    def _http(self) -> web.Server:
        if self._http_server is None:
            self._http_server = web.Server(self._handle_http, handler_cancellation=False)
        return self._http_server

    def http_protocol(self) -> _JsonErrorHandler:
        handler = _JsonErrorHandler(
            self._http,
            loop=asyncio.get_running_loop(),
            keepalive_timeout=75.0,
            max_line_size=8190,
            max_field_size=8190,
            max_headers=64,
            # no line per request: any client could fill the log (aiohttp takes None)
            access_log=None,  # type: ignore[arg-type]
        )
        handler.on_lost = self._refused.discard  # refused, then gone before its request
        handler.request_timeout = self.settings.first_request_timeout
        return handler

    def connections(self) -> int:
        """Open connections, each once: those that have not sent a byte yet, aiohttp's
        (HTTP, and WebSocket, which is an upgraded HTTP connection) and the newline-JSON
        ones; not those being refused (:meth:`refusals`)."""
        http = sum(1 for h in self._http.connections if h not in self._refused)
        return len(self.sniffing) + http + self._line_connections

    @property
    def closing(self) -> bool:
        return self._closing

    def refusals(self) -> int:
        """Connections accepted over the limit, held until they are told so."""
        return len(self.refusing) + len(self._refused) + self._line_refusals

    def over_limit(self) -> bool:
        return self._closing or self.connections() >= self.settings.max_connections

    def refuse(self, handler: web.RequestHandler) -> None:
        self._refused.add(handler)

    # ---- shared state ------------------------------------------------------------

    def new_subscription_id(self) -> str:
        return f"qssh-{next(self._ids)}"

    def tier(self) -> tuple[int, dict[str, Any]]:
        if self._tier_view is None:
            self._tier_view = self.backend.node_tier()
        return self._tier_version, self._tier_view

    def tier_changed(self, view: dict[str, Any]) -> None:
        """The node tier changed: every tier subscription hears of it."""
        self._tier_view = view
        self._tier_version += 1
        for session in self.sessions:
            session.tier_changed()

    def _settled(self, lease_id: int) -> None:
        sub = self.owners.settled(lease_id)
        if sub is not None:
            session = self.sessions_by_sub.get(sub.id)
            if session is not None:
                session.slot_freed(sub.id)

    def give_back(self, lease_ids: list[int]) -> None:
        """Release leases a subscription still held (unsubscribe, disconnect)."""
        self.owners.forget(lease_ids)
        if lease_ids:
            task = asyncio.get_running_loop().create_task(self._release_all(lease_ids))
            self.busy.add(task)
            task.add_done_callback(self.busy.discard)

    async def _release_all(self, lease_ids: list[int]) -> None:
        for lease_id in lease_ids:
            # SidecarError: expired meanwhile (the queue has it back) or acked elsewhere
            with contextlib.suppress(SidecarError):
                await self.backend.node_release(lease_id)

    # ---- HTTP and WebSocket ------------------------------------------------------

    async def _handle_http(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = request.protocol
        if isinstance(handler, _JsonErrorHandler):
            deadline = handler.request_started()
        else:  # cannot happen: every connection is a _JsonErrorHandler
            deadline = asyncio.get_running_loop().time() + self.settings.first_request_timeout
        resp = await self._route(request, deadline)
        if self._closing and not isinstance(resp, web.WebSocketResponse):
            resp.force_close()  # a kept-alive connection ends with this reply
        return resp

    async def _route(self, request: web.BaseRequest, deadline: float) -> web.StreamResponse:
        """Answer ``request``, whose body must be in by ``deadline`` (loop time)."""
        if request.protocol in self._refused:
            self._refused.discard(request.protocol)
            resp = _json_error(
                503,
                "too many node connections (node.max_connections = "
                f"{self.settings.max_connections}) or shutting down; retry later",
            )
            resp.force_close()
            return resp
        path = request.path
        if path in ("/health", "/health/readiness"):
            if request.method not in ("GET", "HEAD"):
                return _json_error(405, f"{path} takes GET", Allow="GET")
            return self._health(readiness=path.endswith("readiness"))
        if request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        if request.method != "POST":
            return _json_error(
                405, "POST a JSON-RPC request, or open a WebSocket", Allow="POST, GET"
            )
        # application/json only: a web page cannot send it cross-origin without a
        # CORS preflight, which we never answer, so browsers cannot reach the queue.
        if request.content_type != JSON:
            return _json_error(415, "Content-Type must be application/json")
        limit = self.settings.max_body_bytes
        if (
            request.headers.get("Expect", "").lower() == "100-continue"
            and request.version >= (1, 1)
            and not (request.content_length is not None and request.content_length > limit)
        ):
            # RFC 9110 10.1.1: the client (curl, for a body over 1 MiB) waits for it
            # before sending the body; one over the limit is answered 413 at once below.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the response proper has not started
        try:
            async with asyncio.timeout_at(deadline):
                body = await _read_body(request, limit)
        except TimeoutError:
            if isinstance(request.protocol, _JsonErrorHandler):
                request.protocol.late()
            resp = _json_error(
                408,
                "request not complete within node.first_request_timeout = "
                f"{self.settings.first_request_timeout:g} s",
            )
            resp.force_close()
            return resp
        if body is None:
            resp = _json_error(413, f"body over node.max_body_bytes = {limit}")
            resp.force_close()
            return resp
        task = asyncio.current_task()
        assert task is not None
        self.busy.add(task)
        try:
            reply = await self.rpc.handle_body(body)
        finally:
            self.busy.discard(task)
        if reply is None:
            return web.Response(status=204)
        return web.Response(body=reply, content_type=JSON)

    def _health(self, *, readiness: bool) -> web.Response:
        health = self.backend.node_health()
        health["draining"] = self._closing
        if readiness:
            ok = bool(health["ready"]) and not self._closing
        else:
            ok = health["log"] == "ok" and not self._closing
        return web.json_response(health, status=200 if ok else 503)

    async def _websocket(self, request: web.BaseRequest) -> web.StreamResponse:
        # A browser always sends Origin; the node and its tools do not. Refusing it
        # keeps web pages (which may open WebSockets cross-origin) off the queue.
        if "Origin" in request.headers:
            return _json_error(403, "WebSocket with an Origin header (a browser) refused")
        s = self.settings
        ws = web.WebSocketResponse(
            max_msg_size=s.max_ws_message_bytes,
            compress=False,
            writer_limit=s.ws_send_buffer_bytes,
            autoping=True,
        )
        await ws.prepare(request)

        async def write(data: bytes) -> None:
            await ws.send_frame(data, WSMsgType.TEXT)

        session = Session(self, write)
        self.sessions.add(session)
        session.reader = asyncio.current_task()
        slots = asyncio.Semaphore(s.max_in_flight)
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                await slots.acquire()
                data = msg.data.encode() if isinstance(msg.data, str) else msg.data
                session.spawn(data, slots)
                if self._closing:
                    break
        finally:
            session.reader = None
            await self._end_session(session)
            await ws.close(code=1001 if self._closing else 1000)
        return ws

    async def _end_session(self, session: Session) -> None:
        """Stop its subscriptions now; let its requests in flight finish first."""
        await session.close()
        if session.busy:
            await asyncio.wait(set(session.busy))
        self.sessions.discard(session)

    # ---- newline JSON on the unix socket -----------------------------------------

    def lines_protocol(self, *, refused: bool, deadline: float) -> asyncio.Protocol:
        """A newline-JSON connection, counted from now until :meth:`serve_lines` ends;
        its first request must be in by ``deadline`` (loop time)."""
        if refused:
            self._line_refusals += 1
        else:
            self._line_connections += 1
        reader = asyncio.StreamReader(limit=self.settings.max_body_bytes)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.serve_lines(reader, writer, refused=refused, deadline=deadline)

        return asyncio.StreamReaderProtocol(reader, serve)

    async def serve_lines(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        refused: bool,
        deadline: float | None,
    ) -> None:
        """Serve one newline-JSON connection. Its first request must be in by
        ``deadline``, and a later line within ``first_request_timeout`` of its first
        byte; an idle connection with no partial line is kept (it may be subscribed)."""

        async def write(data: bytes) -> None:
            writer.write(data + b"\n")
            await writer.drain()

        if refused or self._closing:
            try:
                with contextlib.suppress(ConnectionError):
                    await write(
                        error_body(
                            SERVER_ERROR,
                            "too many node connections (node.max_connections = "
                            f"{self.settings.max_connections}) or shutting down; retry later",
                        )
                    )
                writer.close()
            finally:
                if refused:
                    self._line_refusals -= 1
                else:
                    self._line_connections -= 1
            return
        session = Session(self, write)
        self.sessions.add(session)
        session.reader = asyncio.current_task()
        slots = asyncio.Semaphore(self.settings.max_in_flight)
        loop = asyncio.get_running_loop()
        timeout, limit = self.settings.first_request_timeout, self.settings.max_body_bytes
        buf = bytearray()  # a partial line, and the lines after it not yet taken
        served = False  # a first request was read
        try:
            while not self._closing:
                end = buf.find(b"\n")
                if end > limit or (end < 0 and len(buf) > limit):
                    with contextlib.suppress(ConnectionError):
                        await write(
                            error_body(
                                INVALID_REQUEST,
                                f"line over node.max_body_bytes = {limit}",
                            )
                        )
                    break
                if end < 0:
                    async with asyncio.timeout_at(deadline):
                        chunk = await reader.read(READ_CHUNK)
                    if not chunk:
                        break  # EOF
                    if deadline is None:  # a later request begins
                        deadline = loop.time() + timeout
                    buf += chunk
                    continue
                line = bytes(buf[: end + 1])
                del buf[: end + 1]
                if line.strip():
                    served = True
                    await slots.acquire()
                    session.spawn(line, slots)
                if served:  # idle without a partial line: kept, however long
                    deadline = loop.time() + timeout if buf else None
        except TimeoutError:
            # one short line, not awaited: a client that does not read is not waited on
            writer.write(
                error_body(
                    INVALID_REQUEST,
                    f"request not complete within node.first_request_timeout = {timeout:g} s",
                    {"code": "request_timeout"},
                )
                + b"\n"
            )
            _close(writer.transport)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._line_connections -= 1
            session.reader = None
            await self._end_session(session)
            writer.close()

    # ---- stopping ----------------------------------------------------------------

    async def close(self, drain: float = 5.0) -> None:
        """Stop accepting; let requests being answered finish (up to ``drain`` s);
        end every subscription, giving its leases back."""
        self._closing = True
        for s in self._servers:
            s.close()
        for sniffer in [*self.sniffing, *self.refusing]:
            sniffer.close()  # connected but silent: nothing in flight, close it now
        for session in list(self.sessions):
            if session.reader is not None and not session.busy:
                session.reader.cancel()  # idle: nothing in flight, close it now
        busy = set(self.busy)
        if busy:
            _done, late = await asyncio.wait(busy, timeout=drain)
            for t in late:
                log.warning("node RPC request still running after %.1fs; cancelling", drain)
                t.cancel()
            if late:
                await asyncio.wait(late, timeout=2.0)
        readers = [s.reader for s in self.sessions if s.reader is not None]
        for r in readers:
            r.cancel()
        await self._http.shutdown(timeout=1.0)
        if readers:
            await asyncio.wait(readers, timeout=2.0)
        pending = set(self.busy)  # the last lease releases
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        for s in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2.0)
        self._servers.clear()
        if self._socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._socket_path.unlink()
            self._socket_path = None


class _Sniffer(asyncio.Protocol):
    """Waits for a connection's first bytes, then hands it to the right protocol."""

    def __init__(self, endpoint: NodeEndpointServer, *, lines: bool) -> None:
        self.endpoint = endpoint
        self.lines = lines
        self.refused = False  # accepted over the limit: told so at its first bytes
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0  # its first request must be complete by then (loop time)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; uvloop's do not subclass asyncio.Transport, so no isinstance
        self.transport = cast(asyncio.Transport, transport)
        endpoint = self.endpoint
        # It counts from now: a connection that has sent nothing holds an fd too.
        if endpoint.over_limit():
            if endpoint.refusals() >= REFUSE_AT_MOST:
                transport.close()  # enough are being told why; no log line for each
                return
            self.refused = True
            endpoint.refusing.add(self)
        else:
            endpoint.sniffing.add(self)
        # A connection that never sends a byte holds no slot for long (nor one that
        # sends only part of a request: the deadline goes on with it, _hand_over).
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + endpoint.settings.first_request_timeout
        self._timer = loop.call_at(self.deadline, self.close)

    def close(self) -> None:
        self._done()
        if self.transport is not None:
            self.transport.close()

    def _done(self) -> None:
        self.endpoint.sniffing.discard(self)
        self.endpoint.refusing.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        self._done()
        self._hand_over(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    def _hand_over(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        endpoint = self.endpoint
        proto: asyncio.Protocol
        # Its slot was taken when it connected: only one accepted over the limit (or
        # a drain begun since) is refused.
        over = self.refused or endpoint.closing
        if self.lines and data[:1] and data[0] in LINE_START:
            proto = endpoint.lines_protocol(refused=self.refused, deadline=self.deadline)
            transport.set_protocol(proto)
            proto.connection_made(transport)
        else:
            handler = endpoint.http_protocol()
            if over:
                endpoint.refuse(handler)  # told at its first request (if it completes it)
            proto = handler
            transport.set_protocol(proto)
            proto.connection_made(transport)
            handler.expect_request(self.deadline)
        if data:
            proto.data_received(data)


async def _read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The body (plain or chunked), or None once it is over ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _close(transport: asyncio.BaseTransport) -> None:
    """Close, and at once if what is written is not flushed: a client that does not
    read is not waited on (its connection would outlive its count)."""
    stream = cast(asyncio.WriteTransport, transport)
    if stream.get_write_buffer_size() > 0:
        stream.abort()
    else:
        stream.close()


def _remove_stale_socket(path: Path) -> None:
    """A socket left by a previous run; safe, a live daemon holds the data dir lock."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()
