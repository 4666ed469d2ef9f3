"""The seven message kinds (SPEC §3): validation, priorities and canonical JSON.

A `QueueMessage` keeps its canonical JSON form (hashes as lowercase hex, other bytes
as base64) as its internal representation: the log and the wire carry exactly that
form, so recovery rebuilds messages without re-validating or re-encoding them.
It holds nothing else once validation is done: the bytes, copied out of orjson's
output buffer at their exact size (orjson's result keeps its whole growth buffer, 4 KB
for a 300-byte message), and the kind. Fields are parsed from the bytes when read.
Input may also be the Rust node's serde form, ``{"BlockImport": {...}}`` with byte
arrays as lists of ints.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum, StrEnum
from operator import attrgetter
from typing import Any, Final

import orjson

from sidecar.errors import InvalidMessage, MessageTooLarge, UnknownKind

DEFAULT_MAX_MESSAGE_BYTES: Final = 1024 * 1024
U64_MAX: Final = 2**64 - 1


class Priority(IntEnum):
    CRITICAL = 100
    HIGH = 75
    NORMAL = 50
    LOW = 25


class Mode(StrEnum):
    SYNC = "sync"
    ASYNC = "async"


class Kind(StrEnum):
    BLOCK_IMPORT = "block_import"
    VOTE = "vote"
    TRANSACTION = "transaction"
    ENTROPY_SHARE = "entropy_share"
    GOSSIP = "gossip"
    PEER_DISCOVERY = "peer_discovery"
    TELEMETRY = "telemetry"

    @property
    def priority(self) -> Priority:
        return _PRIORITY[self]

    @property
    def default_mode(self) -> Mode:
        return _DEFAULT_MODE[self]

    @property
    def serde_name(self) -> str:
        return "".join(part.capitalize() for part in self.value.split("_"))


_PRIORITY: Final = {
    Kind.BLOCK_IMPORT: Priority.CRITICAL,
    Kind.VOTE: Priority.CRITICAL,
    Kind.TRANSACTION: Priority.HIGH,
    Kind.ENTROPY_SHARE: Priority.HIGH,
    Kind.GOSSIP: Priority.NORMAL,
    Kind.PEER_DISCOVERY: Priority.NORMAL,
    Kind.TELEMETRY: Priority.LOW,
}
_DEFAULT_MODE: Final = {
    k: Mode.SYNC if p >= Priority.HIGH else Mode.ASYNC for k, p in _PRIORITY.items()
}
_BY_SERDE_NAME: Final = {k.serde_name: k for k in Kind}
_MODES: Final = {m.value: m for m in Mode}
_KIND_BY_VALUE: Final = {k.value: k for k in Kind}
# Canonical bytes start with the kind (`_validate` puts it first and orjson keeps the
# order), and the first two letters of a kind name tell the seven apart: a logged
# message's kind is one slice and one lookup away (`from_logged`).
_KIND_BY_HEAD: Final = {b'{"kind":"' + k.value[:2].encode(): k for k in Kind}
assert len(_KIND_BY_HEAD) == len(Kind)
_HEAD_BYTES: Final = len(next(iter(_KIND_BY_HEAD)))
# for the log's replay loop, which inlines `QueueMessage.from_logged`
LOGGED_KIND_BY_HEAD: Final = _KIND_BY_HEAD
LOGGED_HEAD_BYTES: Final = _HEAD_BYTES


def parse_kinds(names: object) -> frozenset[Kind]:
    """A kinds filter from the wire: a non-empty list of kind names (docs/messages.md)."""
    if not isinstance(names, list) or not names:
        raise InvalidMessage("kinds must be a non-empty list of message kind names")
    kinds = set()
    for name in names:
        kind = _KIND_BY_VALUE.get(name) if isinstance(name, str) else None
        if kind is None:
            known = ", ".join(_KIND_BY_VALUE)
            raise UnknownKind(f"unknown message kind {str(name)[:64]!r} in kinds (known: {known})")
        kinds.add(kind)
    return frozenset(kinds)


# --- field types -----------------------------------------------------------------------
# Each converter takes (field path, input value, serde form?) and returns the canonical
# JSON value, raising InvalidMessage with the field named.

_Conv = Callable[[str, Any, bool], Any]
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?")


def _bad(path: str, what: str) -> InvalidMessage:
    return InvalidMessage(f"field {path!r}: {what}")


def _int_list_to_bytes(path: str, value: Any) -> bytes:
    if not isinstance(value, list):
        raise _bad(path, "expected a list of byte values (0-255)")
    try:
        return bytes(value)
    except (TypeError, ValueError):
        raise _bad(path, "expected a list of byte values (0-255)") from None


def _hash32(path: str, value: Any, serde: bool) -> str:
    if serde and isinstance(value, list):
        raw = _int_list_to_bytes(path, value)
        if len(raw) != 32 or any(isinstance(v, bool) for v in value):
            raise _bad(path, f"expected 32 bytes, got {len(raw)}")
        return raw.hex()
    if isinstance(value, str) and _HEX64.fullmatch(value):
        return value.lower()
    raise _bad(path, "expected a 32-byte hash as 64 hex digits")


def _bytes(path: str, value: Any, serde: bool) -> str:
    if serde and isinstance(value, list):
        if any(isinstance(v, bool) for v in value):
            raise _bad(path, "expected a list of byte values (0-255)")
        return base64.b64encode(_int_list_to_bytes(path, value)).decode("ascii")
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(path, "expected base64") from None
        return base64.b64encode(raw).decode("ascii")
    raise _bad(path, "expected bytes as a base64 string")


def _u64(path: str, value: Any, serde: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(path, "expected an unsigned 64-bit integer")
    if not 0 <= value <= U64_MAX:
        raise _bad(path, "out of the u64 range")
    return value


def _str(path: str, value: Any, serde: bool) -> str:
    if not isinstance(value, str):
        raise _bad(path, "expected a string")
    return value


def _decimal(path: str, value: Any, serde: bool) -> str:
    """Money: a non-negative integer or decimal string; canonical form the string."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, float):
        raise _bad(
            path,
            'money is never a float: give a decimal string such as "1250.50" '
            "(on the command line: 'value_usd=\"1250.50\"') or an integer",
        )
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise _bad(path, "expected a non-negative integer or decimal string such as '1250.50'")
    return value


def _number(path: str, value: Any, serde: bool) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(path, "expected a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(path, "expected a finite number")
    return value


def _percent(path: str, value: Any, serde: bool) -> int | float:
    number = _number(path, value, serde)
    if not 0 <= number <= 100:
        raise _bad(path, "expected a percentage between 0 and 100")
    return number


def _str_list(path: str, value: Any, serde: bool) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(path, "expected a list of strings")
    return list(value)


def _str_map(path: str, value: Any, serde: bool) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad(path, "expected an object of string to string")
    return dict(value)


# kind -> field name -> (converter, required)
_SCHEMA: Final[dict[Kind, dict[str, tuple[_Conv, bool]]]] = {
    Kind.BLOCK_IMPORT: {
        "block_hash": (_hash32, True),
        "block_number": (_u64, True),
        "timestamp": (_u64, True),
    },
    Kind.VOTE: {
        "validator": (_str, True),
        "block_hash": (_hash32, True),
        "signature": (_bytes, True),
    },
    Kind.TRANSACTION: {
        "tx_hash": (_hash32, True),
        "tx_data": (_bytes, True),
        "value_usd": (_decimal, False),
    },
    Kind.ENTROPY_SHARE: {
        "device_id": (_str, True),
        "entropy": (_bytes, True),
        "qber_percent": (_percent, True),
    },
    Kind.GOSSIP: {"topic": (_str, True), "data": (_bytes, True)},
    Kind.PEER_DISCOVERY: {"peer_id": (_str, True), "addresses": (_str_list, True)},
    Kind.TELEMETRY: {"name": (_str, True), "value": (_number, True), "labels": (_str_map, False)},
}
# what each converter accepts, as docs/messages.md names it
_TYPE_NAMES: Final[dict[_Conv, str]] = {
    _hash32: "hash32",
    _bytes: "bytes",
    _u64: "u64",
    _str: "string",
    _decimal: "decimal",
    _number: "number",
    _percent: "percent",
    _str_list: "string list",
    _str_map: "string map",
}


def field_types(kind: Kind) -> dict[str, tuple[str, bool]]:
    """Each field of ``kind``: its type name (docs/messages.md) and whether required."""
    return {name: (_TYPE_NAMES[conv], req) for name, (conv, req) in _SCHEMA[kind].items()}


_BYTE_FIELDS: Final = {
    (kind, name)
    for kind, fields in _SCHEMA.items()
    for name, (conv, _) in fields.items()
    if conv in (_bytes, _hash32)
}


class QueueMessage:
    """One validated message; immutable. Build with `from_json` or `create`."""

    __slots__ = ("_encoded", "_kind")

    _kind: Kind | None  # None until needed (messages read back from the log)
    _encoded: bytes

    def __init__(self) -> None:
        raise TypeError("use QueueMessage.from_json() or QueueMessage.create()")

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_json(
        cls, obj: Mapping[str, Any] | str | bytes, *, max_size: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> QueueMessage:
        """Validate canonical or Rust serde JSON; raise an `InvalidMessage` subclass."""
        if isinstance(obj, str | bytes | bytearray | memoryview):
            # serde byte arrays take up to four characters per byte, hence the slack
            if len(obj) > 4 * max_size + 1024:
                raise MessageTooLarge(f"message of {len(obj)} bytes exceeds {max_size} bytes")
            try:
                obj = orjson.loads(obj)
            except orjson.JSONDecodeError as exc:
                raise InvalidMessage(f"message is not valid JSON: {exc}") from None
        if not isinstance(obj, Mapping):
            raise InvalidMessage("message must be a JSON object")
        if "kind" in obj:
            kind_name = obj["kind"]
            try:
                kind = Kind(kind_name)
            except ValueError:
                raise UnknownKind(f"unknown message kind {kind_name!r}") from None
            fields = {k: v for k, v in obj.items() if k != "kind"}
            serde = False
        elif len(obj) == 1:
            ((name, fields),) = obj.items()
            found = _BY_SERDE_NAME.get(name) if isinstance(name, str) else None
            if found is None:
                raise UnknownKind(f"unknown message kind {name!r}")
            kind = found
            if not isinstance(fields, Mapping):
                raise InvalidMessage(f"{name}: fields must be a JSON object")
            serde = True
        else:
            raise InvalidMessage("message needs a 'kind' field (or one serde variant key)")
        return cls._validate(kind, fields, serde=serde, max_size=max_size)

    @classmethod
    def create(cls, kind: Kind | str, /, **fields: Any) -> QueueMessage:
        """Build from Python values: bytes fields may be given as `bytes`."""
        try:
            kind = Kind(kind)
        except ValueError:
            raise UnknownKind(f"unknown message kind {kind!r}") from None
        canon: dict[str, Any] = {}
        for name, value in fields.items():
            if isinstance(value, bytes | bytearray) and (kind, name) in _BYTE_FIELDS:
                conv = _SCHEMA[kind][name][0]
                canon[name] = value.hex() if conv is _hash32 else base64.b64encode(value).decode()
            else:
                canon[name] = value
        return cls._validate(kind, canon, serde=False, max_size=DEFAULT_MAX_MESSAGE_BYTES)

    @classmethod
    def _validate(
        cls, kind: Kind, fields: Mapping[str, Any], *, serde: bool, max_size: int
    ) -> QueueMessage:
        schema = _SCHEMA[kind]
        extra = sorted(set(fields) - set(schema))
        if extra:
            raise InvalidMessage(f"{kind.value}: unexpected field(s) {', '.join(map(str, extra))}")
        canon: dict[str, Any] = {"kind": kind.value}
        for name, (conv, required) in schema.items():
            value = fields.get(name)
            if value is None:
                if required:
                    raise InvalidMessage(f"{kind.value}: missing field {name!r}")
                continue
            canon[name] = conv(name, value, serde)
        encoded = orjson.dumps(canon)
        if len(encoded) > max_size:
            raise MessageTooLarge(
                f"{kind.value} message of {len(encoded)} bytes exceeds the {max_size}-byte limit"
            )
        msg = object.__new__(cls)
        msg._kind = kind
        msg._encoded = bytes(memoryview(encoded))  # exact size: see the module docstring
        return msg

    @classmethod
    def from_logged(cls, encoded: bytes) -> QueueMessage:
        """A message whose canonical bytes came from our own (checksummed) log.

        Only the kind is read, from the prefix every canonical form starts with (the
        queue indexes ready messages by kind); other fields are parsed when needed, so
        recovering a million messages keeps little more than their bytes. `encoded`
        must be exactly sized (not orjson output).
        """
        msg = object.__new__(cls)
        msg._kind = _KIND_BY_HEAD.get(encoded[:_HEAD_BYTES])  # None: parsed when needed
        msg._encoded = encoded
        return msg

    def _parsed(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self._encoded)
        return parsed

    @property
    def kind(self) -> Kind:
        kind = self._kind
        if kind is None:
            kind = self._kind = _KIND_BY_VALUE[self._parsed()["kind"]]
        return kind

    # -- views ---------------------------------------------------------------------------
    @property
    def priority(self) -> Priority:
        return _PRIORITY[self.kind]

    @property
    def default_mode(self) -> Mode:
        return _DEFAULT_MODE[self.kind]

    @property
    def encoded_size(self) -> int:
        return len(self._encoded)

    def to_json(self) -> dict[str, Any]:
        """Canonical form as a fresh dict (hashes hex, other bytes base64)."""
        return self._parsed()

    def to_json_bytes(self) -> bytes:
        return self._encoded

    def canonical(self) -> dict[str, Any]:
        """The canonical dict, parsed from the bytes on each call (none is kept)."""
        return self._parsed()

    def get(self, name: str) -> Any:
        """A field as a Python value: bytes fields decoded to `bytes`, absent → None."""
        return self._field(name, self._parsed().get(name))

    def _field(self, name: str, value: Any) -> Any:
        if value is None or (self.kind, name) not in _BYTE_FIELDS:
            return value
        if _SCHEMA[self.kind][name][0] is _hash32:
            return bytes.fromhex(value)
        return base64.b64decode(value)

    def to_serde(self) -> dict[str, Any]:
        """The Rust node's serde form (byte arrays as lists of ints)."""
        inner = {
            k: list(self._field(k, v)) if (self.kind, k) in _BYTE_FIELDS else v
            for k, v in self._parsed().items()
            if k != "kind"
        }
        return {self.kind.serde_name: inner}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QueueMessage) and self._encoded == other._encoded

    def __hash__(self) -> int:
        return hash(self._encoded)

    def __repr__(self) -> str:
        return f"QueueMessage({self._encoded[:120].decode('utf-8', 'replace')})"


def resolve_mode(message: QueueMessage, requested: Mode | str | None) -> Mode:
    """The mode a submit asks for: ``None`` or ``"default"`` is the kind's default mode
    (the kind table above is the only source of defaults); otherwise sync or async."""
    if requested is None or requested == "default":
        return message.default_mode
    mode = _MODES.get(requested) if isinstance(requested, str) else None
    if mode is None:
        raise InvalidMessage(f"mode must be sync, async or default, not {requested!r}")
    return mode


class QueueMessageWithProvenance:
    """A message plus what the queue knows about it (SPEC §3 provenance)."""

    __slots__ = (
        "broadcast",
        "created_at",
        "delivery_count",
        "message",
        "message_id",
        "mode",
        "origin",
        "origin_id",
        "persisted",
        "priority",
        "submitted_by",
        "upgraded",
    )

    def __init__(
        self,
        message: QueueMessage,
        message_id: int,
        created_at: float,
        submitted_by: str,
        *,
        persisted: bool = False,
        broadcast: bool = False,
        mode: Mode = Mode.SYNC,
        upgraded: bool = False,
        delivery_count: int = 0,
        origin: str | None = None,
        origin_id: int | None = None,
    ) -> None:
        self.message = message
        self.message_id = message_id
        self.created_at = created_at
        self.submitted_by = submitted_by
        self.persisted = persisted
        self.broadcast = broadcast
        self.priority: Priority = message.priority
        self.mode = mode
        self.upgraded = upgraded
        self.delivery_count = delivery_count
        # set on a message a peer relayed: the sidecar it was submitted to, and its id there
        self.origin = origin
        self.origin_id = origin_id

    @property
    def kind(self) -> Kind:
        return self.message.kind

    def to_json(self) -> dict[str, Any]:
        view = {
            "message_id": self.message_id,
            "message": self.message.to_json(),
            "created_at": self.created_at,
            "submitted_by": self.submitted_by,
            "persisted": self.persisted,
            "broadcast": self.broadcast,
            "priority": int(self.priority),
            "mode": self.mode.value,
            "upgraded": self.upgraded,
            "delivery_count": self.delivery_count,
        }
        if self.origin is not None:
            view["origin"] = self.origin
            view["origin_id"] = self.origin_id
        return view

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self.to_json())

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> QueueMessageWithProvenance:
        """Parse `to_json()` output; the message part is validated."""
        try:
            return cls(
                QueueMessage.from_json(obj["message"]),
                int(obj["message_id"]),
                float(obj["created_at"]),
                str(obj["submitted_by"]),
                persisted=bool(obj["persisted"]),
                broadcast=bool(obj.get("broadcast", False)),
                mode=Mode(obj.get("mode", Mode.SYNC)),
                upgraded=bool(obj.get("upgraded", False)),
                delivery_count=int(obj.get("delivery_count", 0)),
                origin=None if obj.get("origin") is None else str(obj["origin"]),
                origin_id=None if obj.get("origin_id") is None else int(obj["origin_id"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidMessage(f"bad provenance record: {exc}") from None

    # Read at C speed, for bulk loads of a million recovered messages:
    @staticmethod
    def kinds_of(items: Sequence[QueueMessageWithProvenance]) -> list[Kind]:
        """Each item's kind."""
        kinds: list[Kind | None] = list(map(_MESSAGE_KIND, items))
        if None in kinds:  # a kind not read yet: parsed
            return [item.kind for item in items]
        return kinds  # type: ignore[return-value]

    @staticmethod
    def total_size(items: Sequence[QueueMessageWithProvenance]) -> int:
        """The canonical bytes of all items."""
        return sum(map(len, map(_MESSAGE_BYTES, items)))

    def __repr__(self) -> str:
        return (
            f"QueueMessageWithProvenance(id={self.message_id}, kind={self.kind.value}, "
            f"mode={self.mode.value}, persisted={self.persisted}, "
            f"delivery_count={self.delivery_count})"
        )


_MESSAGE_KIND: Final = attrgetter("message._kind")
_MESSAGE_BYTES: Final = attrgetter("message._encoded")
