"""Record types kept in log frames, and replaying them into the set of live messages.

Records are compact JSON arrays (parsing arrays is about twice as fast as objects,
which matters when a million records are replayed at start-up); `record_to_dict`
gives the named form that `wal dump` prints. The first element is the type:

* ``["S", id, priority, created_at, submitted_by, mode, persisted, broadcast,
  upgraded, delivery_count, message]``: a submit with its full provenance.
  ``persisted`` is always true (the record exists because it is being made durable);
  ``message`` is the canonical message JSON as a string, kept unparsed in memory
  until someone looks inside it.
* ``["C", id]``: consumed (popped or acked); never delivered again.
* ``["R", next_id]``: ids below ``next_id`` may have been handed out. Async submits
  are not logged, so ids are reserved in blocks ahead of use and never reused.
* ``["K", next_id, created_at]``: checkpoint, the first record of a compacted log.

A submit may have a twelfth element, an object of extras: ``"dedup": [principal,
dedup_id]`` (the key is durable in the same fsync as the message), ``"origin"`` and
``"origin_id"`` (a message a peer relayed). ``["D", principal, dedup_id, id, at]``
keeps a dedup key once its submit record is gone (compaction) or was never logged (an
async submit, written by a graceful close). ``["P", peer, id]``: the peer has
broadcast message ``id`` (it acknowledged the relay). ``["W", principal, watermark]``:
the relay principal (``"peer:<name>"``) will never send an origin id below
``watermark`` again; its relay keys below it are gone, the others never expire by time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar.errors import LogCorrupt
from sidecar.messages import (
    LOGGED_HEAD_BYTES,
    LOGGED_KIND_BY_HEAD,
    Kind,
    Mode,
    Priority,
    QueueMessage,
    QueueMessageWithProvenance,
)

SUBMIT = "S"
CONSUME = "C"
RESERVE = "R"
CHECKPOINT = "K"
DEDUP = "D"
RELAYED = "P"
WATERMARK = "W"

_MODES = {m.value: m for m in Mode}
_PRIORITIES = {int(p): p for p in Priority}
_KIND_PRIORITY: dict[Kind | None, int] = {kind: int(kind.priority) for kind in Kind}

Record = list[Any]


def submit_record(item: QueueMessageWithProvenance, dedup: tuple[str, str] | None = None) -> bytes:
    rec = [  # orjson writes an IntEnum as its int, a StrEnum as its string
        SUBMIT,
        item.message_id,
        item.priority,
        item.created_at,
        item.submitted_by,
        item.mode,
        True,
        item.broadcast,
        item.upgraded,
        item.delivery_count,
        item.message.to_json_bytes().decode(),
    ]
    if dedup is None and item.origin is None:
        return orjson.dumps(rec)
    extras: dict[str, Any] = {}
    if dedup is not None:
        extras["dedup"] = list(dedup)
    if item.origin is not None:
        extras["origin"] = item.origin
        extras["origin_id"] = item.origin_id
    rec.append(extras)
    return orjson.dumps(rec)


def consume_record(message_id: int) -> bytes:
    return b'["C",%d]' % message_id


def reserve_record(next_id: int) -> bytes:
    return b'["R",%d]' % next_id


def dedup_record(principal: str, dedup_id: str, message_id: int, at: float) -> bytes:
    return orjson.dumps([DEDUP, principal, dedup_id, message_id, at])


def relayed_record(peer: str, message_id: int) -> bytes:
    return orjson.dumps([RELAYED, peer, message_id])


def watermark_record(principal: str, watermark: int) -> bytes:
    return orjson.dumps([WATERMARK, principal, watermark])


def checkpoint_record(next_id: int, created_at: float) -> bytes:
    return orjson.dumps([CHECKPOINT, next_id, created_at])


def record_to_dict(rec: Record) -> dict[str, Any]:
    """The named form of a record (for people and tools; `wal dump`)."""
    kind = rec[0]
    if kind == SUBMIT:
        return {
            "type": "submit",
            "message_id": rec[1],
            "priority": rec[2],
            "created_at": rec[3],
            "submitted_by": rec[4],
            "mode": rec[5],
            "persisted": rec[6],
            "broadcast": rec[7],
            "upgraded": rec[8],
            "delivery_count": rec[9],
            "message": orjson.loads(rec[10]),
            **(rec[11] if len(rec) > 11 else {}),
        }
    if kind == CONSUME:
        return {"type": "consume", "message_id": rec[1]}
    if kind == RESERVE:
        return {"type": "reserve", "next_id": rec[1]}
    if kind == CHECKPOINT:
        return {"type": "checkpoint", "next_id": rec[1], "created_at": rec[2]}
    if kind == RELAYED:
        return {"type": "relayed", "peer": rec[1], "message_id": rec[2]}
    if kind == DEDUP:
        return {
            "type": "dedup",
            "principal": rec[1],
            "dedup_id": rec[2],
            "message_id": rec[3],
            "at": rec[4],
        }
    if kind == WATERMARK:
        return {"type": "watermark", "principal": rec[1], "watermark": rec[2]}
    return {"type": "unknown", "raw": rec}


# A live message as replay leaves it: built, or, for a plain submit record (no extras,
# not broadcast, an ASCII message text), the parsed record itself, built on first use
# (`live_item`): recovery of a million messages then creates no object per message
# (docs/benchmarks.md § Recovery).
Live = QueueMessageWithProvenance | Record
_KIND_BY_TEXT_HEAD: dict[str, Kind] = {h.decode(): k for h, k in LOGGED_KIND_BY_HEAD.items()}


def logged_item(rec: Record) -> QueueMessageWithProvenance:
    """The message a submit record describes (any of its shapes: see the module
    docstring); raises KeyError, IndexError, TypeError, ValueError or AttributeError on
    a malformed one. Dedup keys are the replay's business, not the message's."""
    fields = len(rec)
    if fields not in {11, 12}:
        raise ValueError(f"a submit record has 11 or 12 fields, not {fields}")
    text: str = rec[10]
    item = object.__new__(QueueMessageWithProvenance)
    item.message = QueueMessage.from_logged(text.encode())
    item.message_id = rec[1]
    item.priority = _PRIORITIES[rec[2]]
    item.created_at = rec[3]
    item.submitted_by = rec[4]
    item.mode = _MODES[rec[5]]
    item.persisted = True
    item.broadcast = rec[7]
    item.upgraded = rec[8]
    item.delivery_count = rec[9]
    if fields == 12:
        extras = rec[11]
        item.origin = extras.get("origin")
        item.origin_id = extras.get("origin_id")
    else:
        item.origin = item.origin_id = None
    return item


def live_item(value: Live) -> QueueMessageWithProvenance:
    """The message of a live entry, built if it is still its record."""
    return logged_item(value) if isinstance(value, list) else value


def live_record(value: Live, dedup: tuple[str, str] | None = None) -> bytes:
    """The submit record of a live entry (its own record, if not built yet)."""
    if isinstance(value, list) and dedup is None:
        return orjson.dumps(value)
    return submit_record(live_item(value), dedup)


def live_broadcast(value: Live) -> bool:
    return not isinstance(value, list) and value.broadcast


@dataclass
class Replayed:
    """The state a sequence of records describes."""

    # id -> message (or its record, see `Live`), in the order of their submit records
    live: dict[int, Live] = field(default_factory=dict)
    # (principal, dedup_id) -> (message id, wall-clock time of the first submit)
    dedup: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    # broadcast messages, kept when consumed (a peer may lack them), and who has each
    broadcast: dict[int, QueueMessageWithProvenance] = field(default_factory=dict)
    relayed: dict[int, set[str]] = field(default_factory=dict)
    # relay principal -> the highest low watermark it sent
    watermarks: dict[str, int] = field(default_factory=dict)
    next_id: int = 1
    submits: int = 0
    consumes: int = 0
    # Read as each record goes by (a pass over a million recovered messages afterwards
    # costs a cache miss or more each): the ids submitted, by kind in log order
    # (consumed ones too: see `runs`), the canonical bytes of the live messages,
    # whether the ids rose throughout and whether each message has its kind's priority
    # (both: `live` is in delivery order, by kind).
    ids_of: dict[Kind | None, list[int]] = field(default_factory=dict)
    live_bytes: int = 0
    ids_rising: bool = True
    kind_priorities: bool = True
    top_id: int = 0  # the highest id of a submit record
    stale: int = 0  # ids in `ids_of` consumed since
    replaced: bool = False  # a submit record for an id already live (bytes miscounted)

    def items(self) -> list[QueueMessageWithProvenance]:
        """The live messages (all built)."""
        return [live_item(value) for value in self.live.values()]

    def size(self) -> int:
        """The canonical bytes of the live messages."""
        if not self.replaced:
            return self.live_bytes
        return sum(_live_bytes(value) for value in self.live.values())

    def runs(self) -> dict[Kind, list[int]]:
        """The ids of the live messages by kind, each list in delivery order (higher
        priority first, then lower id); `ids_of` is taken."""
        runs, self.ids_of = self.ids_of, {}
        live = self.live
        if self.replaced or None in runs or not self.kind_priorities:
            return self._sorted_runs()  # rare: read every message again
        if sum(map(len, runs.values())) != len(live):  # some were consumed since
            runs = {kind: list(filter(live.__contains__, ids)) for kind, ids in runs.items()}
            if sum(map(len, runs.values())) != len(live):  # an id submitted twice
                return self._sorted_runs()
        if not self.ids_rising:  # e.g. async messages logged at a close, after others
            for ids in runs.values():
                ids.sort()
        return {kind: ids for kind, ids in runs.items() if ids and kind is not None}

    def _sorted_runs(self) -> dict[Kind, list[int]]:
        by_kind: dict[Kind, list[tuple[int, int]]] = {}
        for mid, value in self.live.items():
            if isinstance(value, list):
                kind = _KIND_BY_TEXT_HEAD.get(value[10][:LOGGED_HEAD_BYTES])
                priority = int(value[2])
                if kind is None:  # not read from the prefix: parsed
                    kind = live_item(value).kind
            else:
                kind, priority = value.kind, int(value.priority)
            by_kind.setdefault(kind, []).append((-priority, mid))
        runs = {}
        for kind, keys in by_kind.items():
            keys.sort()
            runs[kind] = [mid for _, mid in keys]
        return runs


def _live_bytes(value: Live) -> int:
    if isinstance(value, list):
        return len(value[10])  # ASCII: a byte per character
    return value.message.encoded_size


_unused: list[int] = []
_STALE_IDS = 4096


def _corrupt(path: str, what: str) -> LogCorrupt:
    return LogCorrupt(f"{path}: {what}", path=path, offset=-1, next_valid_offset=None)


class Replayer:
    """Folds records into a `Replayed`, frame by frame as they are read: a consume
    drops its message, so a replay holds the live messages, never every record of the
    log (recovery of a large log streams through `feed`). A plain submit record is
    kept as it was parsed (its fields checked, its strings shared) and built into its
    message on first use; any other becomes its message at once."""

    def __init__(self, path: str = "<log>") -> None:
        self.path = path
        self.out = Replayed()
        self._names: dict[str, str] = {}  # one string per distinct submitted_by

    def _feed_other(self, rec: Record) -> None:
        """A record neither submit nor consume (few: not in the hot loop)."""
        out = self.out
        kind = rec[0]
        if kind == RELAYED:
            out.relayed.setdefault(rec[2], set()).add(rec[1])
        elif kind == DEDUP:
            if len(rec) != 5:
                raise _corrupt(self.path, "malformed dedup record")
            out.dedup.setdefault((rec[1], rec[2]), (rec[3], rec[4]))
        elif kind == WATERMARK:
            if len(rec) != 3 or not isinstance(rec[2], int):
                raise _corrupt(self.path, "malformed watermark record")
            out.watermarks[rec[1]] = max(rec[2], out.watermarks.get(rec[1], 0))
        elif kind in (RESERVE, CHECKPOINT):
            out.next_id = max(out.next_id, rec[1])
        else:
            raise _corrupt(self.path, f"unknown record type {kind!r} (written by a newer version?)")

    def _built(self, rec: Record) -> QueueMessageWithProvenance:
        """A submit record that is not plain, built now (with its dedup key)."""
        out = self.out
        item = logged_item(rec)
        item.submitted_by = self._names.setdefault(item.submitted_by, item.submitted_by)
        if len(rec) == 12 and "dedup" in rec[11]:
            principal, dedup_id = rec[11]["dedup"]
            out.dedup.setdefault((principal, dedup_id), (item.message_id, item.created_at))
        if item.broadcast:
            out.broadcast[item.message_id] = item
        return item

    def feed(self, records: list[Record]) -> None:
        # This loop runs once per record of a million-record log, where each step
        # saved is worth ~0.03 s: a plain submit record stays the list orjson made.
        out = self.out
        live = out.live
        names = self._names
        priorities = _PRIORITIES
        modes = _MODES
        kind_by_head = _KIND_BY_TEXT_HEAD
        head_size = LOGGED_HEAD_BYTES
        kind_priority = _KIND_PRIORITY
        ids_of = out.ids_of
        # the priority and kind prefix of the last submit, and where its id went: looked
        # up again only when they change
        last_priority: Priority | None = None
        last_head = "\0"
        add = _unused.append
        kind_priorities = out.kind_priorities
        live_bytes = out.live_bytes
        ids_rising = out.ids_rising
        top_id = out.top_id
        consumes = others = stale = 0
        try:
            for rec in records:
                kind = rec[0]
                if kind == SUBMIT:
                    text = rec[10]
                    mid = rec[1]
                    if len(rec) == 11 and not rec[7] and text.isascii():
                        # checked as `logged_item` will read it, its strings shared (an
                        # ASCII text costs a byte per character, as its bytes will)
                        priority = priorities[rec[2]]
                        by = rec[4]
                        rec[4] = names.setdefault(by, by)
                        rec[5] = modes[rec[5]]
                        value: Live = rec
                        live_bytes += len(text)
                    else:
                        value = self._built(rec)
                        priority = value.priority
                        live_bytes += value.message.encoded_size
                    if live.setdefault(mid, value) is not value:
                        live[mid] = value
                        out.replaced = True
                    if mid > top_id:
                        top_id = mid
                    else:
                        ids_rising = False
                    if priority is not last_priority or not text.startswith(last_head):
                        message_kind = kind_by_head.get(text[:head_size])
                        if priority != kind_priority.get(message_kind):
                            kind_priorities = False
                        ids = ids_of.get(message_kind)
                        if ids is None:
                            ids = ids_of[message_kind] = []
                        add = ids.append
                        last_priority, last_head = priority, text[:head_size]
                    add(mid)
                elif kind == CONSUME:
                    gone = live.pop(rec[1], None)
                    if gone is not None:
                        live_bytes -= _live_bytes(gone)
                        stale += 1
                    consumes += 1
                else:
                    others += 1
                    self._feed_other(rec)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise _corrupt(
                self.path, f"malformed record ({exc!r}) inside a checksummed frame"
            ) from None
        finally:
            out.next_id = max(out.next_id, top_id + 1)
            out.live_bytes = live_bytes
            out.ids_rising = ids_rising
            out.kind_priorities = kind_priorities
            out.top_id = top_id
            out.submits += len(records) - consumes - others
            out.consumes += consumes
        # the ids of consumed messages go as they pile up: as many as are live, at most
        out.stale += stale
        if out.stale > max(len(live), _STALE_IDS):
            contains = live.__contains__
            for kind, ids in ids_of.items():
                ids_of[kind] = list(filter(contains, ids))
            out.stale = 0


def replay(records: list[Record], *, path: str = "<log>") -> Replayed:
    replayer = Replayer(path)
    replayer.feed(records)
    return replayer.out
