"""The validator node's JSON-RPC 2.0 endpoint.

The node already talks to its queue with five methods; we serve exactly those so it
works unchanged. Dispatch (:class:`NodeRpc`) is pure: a request body in, a reply body
out. The transports are thin: HTTP/1.1 ``POST`` on a unix socket and optionally on
127.0.0.1, and, on the unix socket only, newline-delimited JSON-RPC (detected from
the first byte), for nodes that speak raw JSON over the socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import grp
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from sidecar.dedup import Submitted, check_dedup_id
from sidecar.errors import InvalidMessage, SidecarError

from .config import Endpoint

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # a queue error (queue_full, tier_required, unavailable...)

MAX_BODY = 4 * 1024 * 1024
MAX_HEADER_LINES = 64
MAX_BATCH = 256


class NodeBackend(Protocol):
    """What the endpoint needs from the daemon."""

    @property
    def instance(self) -> str: ...

    async def node_submit(
        self, message: object, *, dedup_id: str | None = None, broadcast: bool = False
    ) -> Submitted: ...

    async def node_pop(self) -> dict[str, Any] | None: ...

    def node_depth(self) -> int: ...

    def node_metrics(self) -> dict[str, Any]: ...


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def _reply_error(req_id: object, err: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": err.to_json(), "id": req_id}


class NodeRpc:
    METHODS = (
        "qssh_submitMessage",
        "qssh_popMessage",
        "qssh_getQueueDepth",
        "qssh_getMetrics",
        "qssh_getValidatorName",
    )

    def __init__(self, backend: NodeBackend, on_call: Callable[[str], None] | None = None) -> None:
        self._backend = backend
        self._on_call = on_call

    async def handle_body(self, body: bytes) -> bytes | None:
        """One HTTP body or line: a request or a batch. None when nothing is to be sent."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            return orjson.dumps(_reply_error(None, RpcError(PARSE_ERROR, f"Parse error: {e}")))
        if isinstance(doc, list):
            if not doc:
                return orjson.dumps(
                    _reply_error(None, RpcError(INVALID_REQUEST, "Invalid Request: empty batch"))
                )
            if len(doc) > MAX_BATCH:
                return orjson.dumps(
                    _reply_error(
                        None, RpcError(INVALID_REQUEST, f"Invalid Request: batch over {MAX_BATCH}")
                    )
                )
            replies = [r for r in [await self.handle(item) for item in doc] if r is not None]
            return orjson.dumps(replies) if replies else None
        reply = await self.handle(doc)
        return None if reply is None else orjson.dumps(reply)

    async def handle(self, req: object) -> dict[str, Any] | None:
        if not isinstance(req, dict):
            return _reply_error(None, RpcError(INVALID_REQUEST, "Invalid Request: not an object"))
        req_id = req.get("id")
        is_notification = "id" not in req
        if req.get("jsonrpc") != "2.0":
            return _reply_error(
                _safe_id(req_id),
                RpcError(INVALID_REQUEST, "Invalid Request: jsonrpc must be '2.0'"),
            )
        if not (req_id is None or isinstance(req_id, int | str)) or isinstance(req_id, bool):
            return _reply_error(None, RpcError(INVALID_REQUEST, "Invalid Request: bad id"))
        method = req.get("method")
        if not isinstance(method, str):
            return _reply_error(req_id, RpcError(INVALID_REQUEST, "Invalid Request: no method"))
        params = req.get("params", [])
        if not isinstance(params, list | dict):
            return _reply_error(
                req_id, RpcError(INVALID_REQUEST, "Invalid Request: params must be array or object")
            )
        try:
            result = await self._call(method, params)
        except RpcError as e:
            return None if is_notification else _reply_error(req_id, e)
        except InvalidMessage as e:
            err = RpcError(INVALID_PARAMS, f"Invalid params: {e.message}", {"code": e.code.value})
            return None if is_notification else _reply_error(req_id, err)
        except SidecarError as e:
            err = RpcError(SERVER_ERROR, e.message, {"code": e.code.value})
            return None if is_notification else _reply_error(req_id, err)
        except Exception:
            log.exception("node RPC %s failed", method)
            err = RpcError(INTERNAL_ERROR, "Internal error")
            return None if is_notification else _reply_error(req_id, err)
        if is_notification:
            return None
        return {"jsonrpc": "2.0", "result": result, "id": req_id}

    async def _call(self, method: str, params: list[Any] | dict[str, Any]) -> Any:
        if method not in self.METHODS:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        if self._on_call is not None:
            self._on_call(method)
        b = self._backend
        if method == "qssh_submitMessage":
            message, options = _submit_params(params)
            dedup_id = options.get("dedup_id")
            done = await b.node_submit(
                message,
                dedup_id=None if dedup_id is None else check_dedup_id(dedup_id),
                broadcast=_flag(options, "broadcast"),
            )
            if dedup_id is None:
                return done.message_id  # what the node has always been answered
            return {"message_id": done.message_id, "duplicate": done.duplicate}
        _no_params(method, params)
        if method == "qssh_popMessage":
            return await b.node_pop()
        if method == "qssh_getQueueDepth":
            return b.node_depth()
        if method == "qssh_getMetrics":
            return b.node_metrics()
        return b.instance


def _safe_id(req_id: object) -> object:
    return req_id if isinstance(req_id, int | str) and not isinstance(req_id, bool) else None


_SUBMIT_OPTIONS = frozenset({"dedup_id", "broadcast"})


def _submit_params(params: list[Any] | dict[str, Any]) -> tuple[object, dict[str, Any]]:
    """The message and the submit options.

    ``[message]`` or ``[message, {options}]`` (positional, as jsonrpsee sends),
    ``{"message": m, ...options}``, or the bare message. Options: ``dedup_id``,
    ``broadcast``.
    """
    if isinstance(params, list):
        if len(params) == 2 and isinstance(params[1], dict):
            return params[0], _options(params[1])
        if len(params) != 1:
            raise RpcError(
                INVALID_PARAMS, "Invalid params: expected [message] or [message, {options}]"
            )
        return params[0], {}
    if "message" in params:
        rest = {k: v for k, v in params.items() if k != "message"}
        return params["message"], _options(rest)
    if not params:
        raise RpcError(INVALID_PARAMS, "Invalid params: expected a message")
    return params, {}


def _options(raw: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(raw) - _SUBMIT_OPTIONS)
    if unknown:
        raise RpcError(
            INVALID_PARAMS,
            f"Invalid params: unknown option(s) {', '.join(map(str, unknown))} "
            "(known: broadcast, dedup_id)",
        )
    return raw


def _flag(options: dict[str, Any], name: str) -> bool:
    value = options.get(name, False)
    if not isinstance(value, bool):
        raise RpcError(INVALID_PARAMS, f"Invalid params: {name} must be true or false")
    return value


def _no_params(method: str, params: list[Any] | dict[str, Any]) -> None:
    if params:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {method} takes no parameters")


# ---- the Rust node's serde form ---------------------------------------------------

_SERDE_NAMES = {
    "block_import": "BlockImport",
    "vote": "Vote",
    "transaction": "Transaction",
    "entropy_share": "EntropyShare",
    "gossip": "Gossip",
    "peer_discovery": "PeerDiscovery",
    "telemetry": "Telemetry",
}
_HEX_FIELDS = {"block_hash", "tx_hash"}
_B64_FIELDS = {"signature", "tx_data", "entropy", "data"}


def to_serde(canonical: dict[str, Any]) -> dict[str, Any]:
    """Canonical JSON → ``{"BlockImport": {"block_hash": [1, 2, …], …}}``."""
    fields = {k: v for k, v in canonical.items() if k != "kind"}
    for k in _HEX_FIELDS & fields.keys():
        fields[k] = list(bytes.fromhex(fields[k]))
    for k in _B64_FIELDS & fields.keys():
        fields[k] = list(base64.b64decode(fields[k]))
    return {_SERDE_NAMES.get(canonical["kind"], canonical["kind"]): fields}


# ---- transports --------------------------------------------------------------------


class NodeEndpointServer:
    """Serves :class:`NodeRpc` on a unix socket and optionally 127.0.0.1 HTTP."""

    def __init__(self, rpc: NodeRpc) -> None:
        self._rpc = rpc
        self._servers: list[asyncio.Server] = []
        self._socket_path: Path | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._busy: set[asyncio.Task[Any]] = set()  # answering a request right now
        self._closing = False

    async def start_unix(self, path: Path, group: str | None) -> None:
        gid = None
        if group is not None:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise OSError(f"node.socket_group: no group named {group!r}") from None
        _remove_stale_socket(path)
        old_umask = os.umask(0o117)  # the socket is born 0660, never briefly wider
        try:
            server = await asyncio.start_unix_server(
                self._serve_unix, path=str(path), limit=MAX_BODY + 1024
            )
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o660)
        if gid is not None:
            os.chown(path, -1, gid)
        self._servers.append(server)
        self._socket_path = path

    async def start_http(self, endpoint: Endpoint) -> int:
        """Listen on a loopback address (checked by the config); the bound port."""
        server = await asyncio.start_server(
            self._serve_http, endpoint.host, endpoint.port, limit=MAX_BODY + 1024
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def close(self, drain: float = 5.0) -> None:
        """Stop accepting; let requests being answered finish (up to ``drain`` s)."""
        self._closing = True
        for s in self._servers:
            s.close()
        idle = self._tasks - self._busy
        for t in idle:
            t.cancel()  # idle keep-alive connections: nothing in flight
        busy = set(self._busy)
        if busy:
            _done, late = await asyncio.wait(busy, timeout=drain)
            for t in late:
                log.warning("node RPC request still running after %.1fs; cancelling", drain)
                t.cancel()
            idle |= late
        if idle:  # let the cancelled connections close their sockets
            await asyncio.wait(idle, timeout=2.0)
        for s in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2.0)
        self._servers.clear()
        if self._socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._socket_path.unlink()
            self._socket_path = None

    def _track(self, fn: Callable[[], Awaitable[None]]) -> Awaitable[None]:
        async def run() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await fn()
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                self._tasks.discard(task)

        return run()

    async def _answer(self, body: bytes) -> bytes | None:
        task = asyncio.current_task()
        assert task is not None
        self._busy.add(task)
        try:
            return await self._rpc.handle_body(body)
        finally:
            self._busy.discard(task)

    async def _serve_unix(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._track(lambda: self._unix_conn(reader, writer))
        finally:
            writer.close()  # also when close() cancelled it: the peer sees EOF now

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._track(lambda: self._http_conn(reader, writer, b""))
        finally:
            writer.close()

    async def _unix_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(1)
        if not first:
            return
        if first in (b"{", b"[", b" ", b"\n"):
            await self._line_conn(first, reader, writer)
        else:
            await self._http_conn(reader, writer, first)

    async def _line_conn(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        pending = first
        while True:
            line = pending + await reader.readuntil(b"\n")
            pending = b""
            if len(line) > MAX_BODY:
                return
            if not line.strip():
                continue
            reply = await self._answer(line)
            if reply is not None:
                writer.write(reply + b"\n")
                await writer.drain()
            if self._closing:
                return

    async def _http_conn(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes
    ) -> None:
        while True:
            request_line = first + await reader.readline()
            first = b""
            if not request_line:
                return
            parts = request_line.decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                await _http_reply(writer, 400, b'{"error":"malformed HTTP request"}', close=True)
                return
            method, _target, version = parts
            headers: dict[str, str] = {}
            for _ in range(MAX_HEADER_LINES + 1):
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            else:
                await _http_reply(writer, 431, b"", close=True)
                return
            keep_alive = version == "HTTP/1.1" and headers.get("connection", "") != "close"
            if method != "POST":
                await _http_reply(writer, 405, b"", close=True, extra="Allow: POST\r\n")
                return
            # application/json only: a web page cannot send it cross-origin without a
            # CORS preflight, which we never answer, so browsers cannot reach the queue.
            if headers.get("content-type", "").split(";")[0].strip() != "application/json":
                await _http_reply(writer, 415, b"", close=True)
                return
            try:
                length = int(headers.get("content-length", "-1"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                await _http_reply(writer, 411 if length < 0 else 413, b"", close=True)
                return
            body = await reader.readexactly(length)
            reply = await self._answer(body)
            keep_alive = keep_alive and not self._closing
            if reply is None:
                await _http_reply(writer, 204, b"", close=not keep_alive)
            else:
                await _http_reply(writer, 200, reply, close=not keep_alive)
            if not keep_alive:
                return


def _remove_stale_socket(path: Path) -> None:
    """A socket left by a previous run; safe, a live daemon holds the data dir lock."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
}


async def _http_reply(
    writer: asyncio.StreamWriter, status: int, body: bytes, *, close: bool, extra: str = ""
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
