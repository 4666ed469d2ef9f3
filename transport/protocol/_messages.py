"""Requests, replies and pushed events as plain values, and their wire form.

Request ``{"id": N, "method": M, "params": {...}}``; reply ``{"id": N, "result": R}``
or ``{"id": N, "error": {"code": C, "message": "..."}}``; a server push has no id:
``{"event": E, ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar.errors import ErrorCode
from transport.protocol._errors import ProtocolError
from transport.protocol._frames import encode_wire_frame

RequestId = int | str

_MAX_ID_CHARS = 128
_U64 = 2**64


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    id: RequestId | None
    result: Any = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    data: dict[str, Any]


def _read_id(obj: dict[str, Any]) -> RequestId | None:
    raw = obj.get("id")
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int) and 0 <= raw < _U64:
        return raw
    if isinstance(raw, str) and 0 < len(raw) <= _MAX_ID_CHARS:
        return raw
    return None


def _load_object(body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame must hold a JSON object, got {type(obj).__name__}")
    return obj


def parse_request(body: bytes) -> Request:
    """One frame body to a :class:`Request`, or :class:`ProtocolError`."""
    obj = _load_object(body)
    request_id = _read_id(obj)
    if request_id is None:
        raise ProtocolError(
            "request needs an 'id': an integer 0..2^64-1 or a non-empty string "
            f"of at most {_MAX_ID_CHARS} characters"
        )
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise ProtocolError("request needs a 'method' string", request_id)
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError("'params' must be a JSON object", request_id)
    extra = set(obj) - {"id", "method", "params"}
    if extra:
        raise ProtocolError(f"unknown request fields: {sorted(extra)}", request_id)
    return Request(request_id, method, params)


def parse_reply(body: bytes) -> Reply | Event:
    """One frame body from the server to a :class:`Reply` or a pushed :class:`Event`."""
    obj = _load_object(body)
    if "event" in obj:
        name = obj["event"]
        if not isinstance(name, str):
            raise ProtocolError("'event' must be a string")
        return Event(name, {k: v for k, v in obj.items() if k != "event"})
    request_id = _read_id(obj)
    if request_id is None and obj.get("id") is not None:
        raise ProtocolError("reply has an invalid 'id'")
    if "error" in obj:
        err = obj["error"]
        if not isinstance(err, dict):
            raise ProtocolError("'error' must be an object")
        return Reply(
            request_id,
            error_code=str(err.get("code", ErrorCode.INTERNAL.value)),
            error_message=str(err.get("message", "")),
        )
    if "result" not in obj:
        raise ProtocolError("reply needs 'result' or 'error'")
    return Reply(request_id, result=obj["result"])


def encode_request(request_id: RequestId, method: str, params: dict[str, Any]) -> bytes:
    return encode_wire_frame({"id": request_id, "method": method, "params": params})


def encode_result(request_id: RequestId, result: Any) -> bytes:
    return encode_wire_frame({"id": request_id, "result": result})


def encode_error(request_id: RequestId | None, code: ErrorCode | str, message: str) -> bytes:
    return encode_wire_frame({"id": request_id, "error": {"code": str(code), "message": message}})


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    return encode_wire_frame({"event": name, **data})
