"""The validator node's JSON-RPC 2.0 methods, in the jsonrpsee style Substrate uses.

Dispatch (:class:`NodeRpc`) is pure: a request body in, a reply body out; it touches
no socket. What a method needs from the daemon is :class:`NodeBackend`; what a
subscription needs from the connection it lives on is :class:`NodeSession` (only a
WebSocket or a unix newline-JSON connection has one; plain HTTP has none). The
transports are in ``node_endpoint``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from sidecar.dedup import Submitted, check_dedup_id
from sidecar.errors import AlreadyConsumed, InvalidMessage, NotFound, SidecarError
from sidecar.messages import Kind, parse_kinds

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # a queue error (queue_full, tier_required, unavailable...)

MESSAGE_NOTIFICATION = "qssh_message"
TIER_NOTIFICATION = "qssh_tier"
SUBMIT_MODES = ("sync", "async", "default")


@dataclass(frozen=True)
class SubscriptionLimits:
    """Bounds on what one subscription may ask for (``[node]`` in the config)."""

    max_unacked: int = 1024
    default_unacked: int = 16
    max_lease_seconds: float = 3600.0
    default_lease_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class NodeLease:
    """A message leased for the node: its id, its deadline (monotonic) and its wire view."""

    lease_id: int
    deadline: float
    view: dict[str, Any]


class NodeBackend(Protocol):
    """What the endpoint needs from the daemon."""

    @property
    def instance(self) -> str: ...

    async def node_submit(
        self,
        message: object,
        *,
        mode: str = "default",
        dedup_id: str | None = None,
        broadcast: bool = False,
    ) -> Submitted: ...

    async def node_pop(self) -> dict[str, Any] | None: ...

    async def node_lease(
        self,
        timeout: float,  # noqa: ASYNC109
        kinds: frozenset[Kind] | None = None,
    ) -> NodeLease | None: ...

    async def node_ack(self, lease_id: int) -> None: ...

    async def node_release(self, lease_id: int) -> None: ...

    def node_depth(self) -> int: ...

    def node_metrics(self) -> dict[str, Any]: ...


class NodeSession(Protocol):
    """The connection a subscription lives on (WebSocket or unix newline JSON)."""

    def subscribe_messages(
        self, max_unacked: int, lease_timeout: float, kinds: frozenset[Kind] | None
    ) -> str: ...

    def unsubscribe_messages(self, sub_id: str) -> bool: ...

    def subscribe_tier(self) -> str: ...

    def unsubscribe_tier(self, sub_id: str) -> bool: ...


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


def error_reply(req_id: object, err: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": err.to_json(), "id": req_id}


def error_body(code: int, message: str, data: object = None) -> bytes:
    """A JSON-RPC error object with a null id: the body of every transport-level refusal."""
    return orjson.dumps(error_reply(None, RpcError(code, message, data)))


def notification(method: str, subscription: str, result: object) -> bytes:
    """A subscription notification as jsonrpsee sends it (and polkadot-js matches it)."""
    return orjson.dumps(
        {
            "jsonrpc": "2.0",
            "method": method,
            "params": {"subscription": subscription, "result": result},
        }
    )


class NodeRpc:
    METHODS = (
        "rpc_methods",
        "qssh_submitMessage",
        "qssh_popMessage",
        "qssh_getQueueDepth",
        "qssh_getMetrics",
        "qssh_getValidatorName",
        "qssh_leaseMessage",
        "qssh_ackMessage",
        "qssh_releaseMessage",
        "qssh_subscribeMessages",
        "qssh_unsubscribeMessages",
        "qssh_subscribeTier",
        "qssh_unsubscribeTier",
    )

    def __init__(
        self,
        backend: NodeBackend,
        on_call: Callable[[str], None] | None = None,
        *,
        max_batch: int = 256,
        limits: SubscriptionLimits = SubscriptionLimits(),
        on_settled: Callable[[int], None] | None = None,
    ) -> None:
        self._backend = backend
        self._on_call = on_call
        self.max_batch = max_batch
        self.limits = limits
        # Told of every lease acked or released here, so the subscription that
        # delivered it (on whichever connection) gets its slot back.
        self.on_settled = on_settled

    async def handle_body(self, body: bytes, session: NodeSession | None = None) -> bytes | None:
        """One HTTP body, WebSocket message or line: a request or a batch.
        None when nothing is to be sent (only notifications).

        Parsed JSON takes up to ~25 times its bytes (``{}`` is 3 bytes, a dict 64), so
        nothing parsed is held across an await but what the request being run needs:
        a batch waits as its items' bytes, each parsed when its turn comes, and
        :meth:`handle` keeps only a request's checked params (docs/operations.md).
        """
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            return orjson.dumps(error_reply(None, RpcError(PARSE_ERROR, f"Parse error: {e}")))
        if not isinstance(doc, list):
            parsed = [doc]
            del doc
            reply = await self.handle(parsed.pop(), session)  # held by handle() alone
            return None if reply is None else orjson.dumps(reply)
        if not doc:
            return orjson.dumps(
                error_reply(None, RpcError(INVALID_REQUEST, "Invalid Request: empty batch"))
            )
        if len(doc) > self.max_batch:
            return orjson.dumps(
                error_reply(
                    None,
                    RpcError(INVALID_REQUEST, f"Invalid Request: batch over {self.max_batch}"),
                )
            )
        # copied: orjson's output buffer can be many times the bytes it holds
        items = [bytes(memoryview(orjson.dumps(item))) for item in doc]
        del doc
        replies = []
        for i in range(len(items)):
            item, items[i] = items[i], b""  # done with, let go
            reply = await self.handle(orjson.loads(item), session)
            if reply:
                replies.append(reply)
        return orjson.dumps(replies) if replies else None

    async def handle(
        self, req: object, session: NodeSession | None = None
    ) -> dict[str, Any] | None:
        if not isinstance(req, dict):
            return error_reply(None, RpcError(INVALID_REQUEST, "Invalid Request: not an object"))
        req_id = req.get("id")
        is_notification = "id" not in req
        if req.get("jsonrpc") != "2.0":
            return error_reply(
                _safe_id(req_id),
                RpcError(INVALID_REQUEST, "Invalid Request: jsonrpc must be '2.0'"),
            )
        if not (req_id is None or _is_id(req_id)):
            return error_reply(None, RpcError(INVALID_REQUEST, "Invalid Request: bad id"))
        method = req.get("method")
        if not isinstance(method, str):
            return error_reply(req_id, RpcError(INVALID_REQUEST, "Invalid Request: no method"))
        params = req.get("params", [])
        del req  # its other members are not needed across the await below
        if not isinstance(params, list | dict):
            return error_reply(
                req_id, RpcError(INVALID_REQUEST, "Invalid Request: params must be array or object")
            )
        if is_notification and method in _SUBSCRIBE:
            return None  # its id would never reach the client: it could not be named
        try:
            result = await self._call(method, params, session)
        except RpcError as e:
            return None if is_notification else error_reply(req_id, e)
        except InvalidMessage as e:
            err = RpcError(INVALID_PARAMS, f"Invalid params: {e.message}", {"code": e.code.value})
            return None if is_notification else error_reply(req_id, err)
        except SidecarError as e:
            err = RpcError(SERVER_ERROR, e.message, {"code": e.code.value})
            return None if is_notification else error_reply(req_id, err)
        except Exception:
            log.exception("node RPC %s failed", method)
            err = RpcError(INTERNAL_ERROR, "Internal error")
            return None if is_notification else error_reply(req_id, err)
        if is_notification:
            return None
        return {"jsonrpc": "2.0", "result": result, "id": req_id}

    async def _call(
        self, method: str, params: list[Any] | dict[str, Any], session: NodeSession | None
    ) -> Any:
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
                mode=_mode(options),
                dedup_id=None if dedup_id is None else check_dedup_id(dedup_id),
                broadcast=_flag(options, "broadcast"),
            )
            if dedup_id is None:
                return done.message_id  # what the node has always been answered
            return {"message_id": done.message_id, "duplicate": done.duplicate}
        if method == "qssh_leaseMessage":
            timeout, kinds = _named(method, params, ("lease_timeout", "kinds"))
            lease = await b.node_lease(self._lease_seconds(timeout), _kinds(kinds))
            return None if lease is None else lease.view
        if method in ("qssh_ackMessage", "qssh_releaseMessage"):
            return await self._settle(method, params)
        if method.startswith(("qssh_subscribe", "qssh_unsubscribe")):
            return self._subscription_call(method, params, _needs_session(method, session))
        _no_params(method, params)
        if method == "rpc_methods":
            return {"version": 1, "methods": sorted(self.METHODS)}
        if method == "qssh_popMessage":
            return await b.node_pop()
        if method == "qssh_getQueueDepth":
            return b.node_depth()
        if method == "qssh_getMetrics":
            return b.node_metrics()
        return b.instance

    async def _settle(self, method: str, params: list[Any] | dict[str, Any]) -> bool:
        (lease_id,) = _named(method, params, ("lease_id",), required=1)
        if not isinstance(lease_id, int) or isinstance(lease_id, bool):
            raise RpcError(INVALID_PARAMS, f"Invalid params: {method} takes an integer lease_id")
        how = self._backend.node_ack if method == "qssh_ackMessage" else self._backend.node_release
        try:
            await how(lease_id)
        except (AlreadyConsumed, NotFound):
            self._settled(lease_id)  # expired or ended elsewhere: the slot is free either way
            raise
        self._settled(lease_id)
        return True

    def _settled(self, lease_id: int) -> None:
        if self.on_settled is not None:
            self.on_settled(lease_id)

    def _subscription_call(
        self, method: str, params: list[Any] | dict[str, Any], session: NodeSession
    ) -> Any:
        if method == "qssh_subscribeMessages":
            unacked, timeout, kinds = _named(
                method, params, ("max_unacked", "lease_timeout", "kinds")
            )
            return session.subscribe_messages(
                self._unacked(unacked), self._lease_seconds(timeout), _kinds(kinds)
            )
        if method == "qssh_subscribeTier":
            _no_params(method, params)
            return session.subscribe_tier()
        (sub_id,) = _named(method, params, ("subscription",), required=1)
        if isinstance(sub_id, int) and not isinstance(sub_id, bool):
            return False  # a numeric subscription id (jsonrpsee has them): never one of ours
        if not isinstance(sub_id, str):
            raise RpcError(INVALID_PARAMS, f"Invalid params: {method} takes a subscription id")
        if method == "qssh_unsubscribeMessages":
            return session.unsubscribe_messages(sub_id)
        return session.unsubscribe_tier(sub_id)

    def _unacked(self, value: object) -> int:
        lim = self.limits
        if value is None:
            return lim.default_unacked
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 1 <= value <= lim.max_unacked
        ):
            raise RpcError(
                INVALID_PARAMS, f"Invalid params: max_unacked must be 1-{lim.max_unacked}"
            )
        return value

    def _lease_seconds(self, value: object) -> float:
        lim = self.limits
        if value is None:
            return lim.default_lease_seconds
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not 0.001 <= value <= lim.max_lease_seconds
        ):
            raise RpcError(
                INVALID_PARAMS,
                f"Invalid params: lease_timeout must be 0.001-{lim.max_lease_seconds:g} seconds",
            )
        return float(value)


_SUBSCRIBE = frozenset({"qssh_subscribeMessages", "qssh_subscribeTier"})


# orjson parses an integer beyond 64 bits as a rounded float; a float id this small
# came from a literal with a fraction or an exponent and is echoed as the same number.
_EXACT_FLOAT_ID = 2.0**53


def _is_id(value: object) -> bool:
    """A String or Number (JSON-RPC 2.0: Numbers SHOULD NOT have fractional parts, so
    they may) that can be echoed as the same value; orjson parses no NaN or infinity."""
    if isinstance(value, float):
        return abs(value) < _EXACT_FLOAT_ID
    return isinstance(value, int | str) and not isinstance(value, bool)


def _safe_id(req_id: object) -> object:
    return req_id if _is_id(req_id) else None


def _needs_session(method: str, session: NodeSession | None) -> NodeSession:
    if session is None:
        raise RpcError(
            INVALID_REQUEST,
            f"Invalid Request: {method} needs a WebSocket or the unix socket's newline JSON "
            "(plain HTTP cannot carry notifications; use qssh_leaseMessage there)",
        )
    return session


def _named(
    method: str, params: list[Any] | dict[str, Any], names: tuple[str, ...], required: int = 0
) -> list[Any]:
    """Params by position (as polkadot-js sends them) or by name; missing ones are None.
    A single object in the array stands for the named form: ``[{"max_unacked": 4}]``."""
    if isinstance(params, list) and len(params) == 1 and isinstance(params[0], dict):
        params = params[0]
    if isinstance(params, dict):
        extra = sorted(set(params) - set(names))
        if extra:
            raise RpcError(INVALID_PARAMS, f"Invalid params: {method} does not take {extra[0]!r}")
        values = [params.get(n) for n in names]
    else:
        if len(params) > len(names):
            raise RpcError(
                INVALID_PARAMS, f"Invalid params: {method} takes at most {len(names)} params"
            )
        values = [*params, *[None] * (len(names) - len(params))]
    if any(v is None for v in values[:required]):
        raise RpcError(INVALID_PARAMS, f"Invalid params: {method} needs {', '.join(names)}")
    return values


_SUBMIT_OPTIONS = frozenset({"mode", "dedup_id", "broadcast"})


def _submit_params(params: list[Any] | dict[str, Any]) -> tuple[object, dict[str, Any]]:
    """The message and the submit options (``mode``, ``dedup_id``, ``broadcast``).

    ``[message]``, ``[message, mode]`` or ``[message, {options}]`` (positional, as
    jsonrpsee sends), ``{"message": m, ...options}``, or the bare message.
    """
    if isinstance(params, list):
        if len(params) == 2 and isinstance(params[1], dict):
            return params[0], _options(params[1])
        if len(params) == 2:
            return params[0], {"mode": params[1]}
        if len(params) != 1:
            raise RpcError(
                INVALID_PARAMS,
                "Invalid params: expected [message], [message, mode] or [message, {options}]",
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
            "(known: broadcast, dedup_id, mode)",
        )
    return raw


def _kinds(value: object) -> frozenset[Kind] | None:
    """The ``kinds`` filter of a lease or subscription: absent, or kind names."""
    if value is None:
        return None
    try:
        return parse_kinds(value)
    except InvalidMessage as e:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {e.message}") from None


def _mode(options: dict[str, Any]) -> str:
    mode = options.get("mode", "default")
    if mode not in SUBMIT_MODES:
        raise RpcError(INVALID_PARAMS, "Invalid params: mode must be sync, async or default")
    return str(mode)


def _flag(options: dict[str, Any], name: str) -> bool:
    value = options.get(name, False)
    if not isinstance(value, bool):
        raise RpcError(INVALID_PARAMS, f"Invalid params: {name} must be true or false")
    return value


def _no_params(method: str, params: list[Any] | dict[str, Any]) -> None:
    if params:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {method} takes no parameters")
