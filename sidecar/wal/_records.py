"""Record types kept in log frames, and replaying them into the set of live messages.

Every record is one JSON object with a ``type``:

* ``submit``: a message with its full provenance (``persisted`` is true: the record
  exists only because it is being made durable).
* ``consume``: ``message_id`` was popped or acked; it is never delivered again.
* ``reserve``: ids below ``next_id`` may have been handed out (async submits are not
  logged, so ids are reserved in blocks ahead of use and never reused).
* ``checkpoint``: first record of a compacted log; carries ``next_id`` forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar.errors import LogCorrupt
from sidecar.messages import Kind, Mode, QueueMessage, QueueMessageWithProvenance

SUBMIT = "submit"
CONSUME = "consume"
RESERVE = "reserve"
CHECKPOINT = "checkpoint"
RECORD_TYPES = (SUBMIT, CONSUME, RESERVE, CHECKPOINT)

_KINDS = {k.value: k for k in Kind}
_MODES = {m.value: m for m in Mode}


def submit_record(item: QueueMessageWithProvenance) -> bytes:
    return orjson.dumps(
        {
            "type": SUBMIT,
            "message_id": item.message_id,
            "message": item.message.canonical(),
            "created_at": item.created_at,
            "submitted_by": item.submitted_by,
            "persisted": True,
            "broadcast": item.broadcast,
            "priority": int(item.priority),
            "mode": item.mode.value,
            "upgraded": item.upgraded,
            "delivery_count": item.delivery_count,
        }
    )


def consume_record(message_id: int) -> bytes:
    return b'{"type":"consume","message_id":%d}' % message_id


def reserve_record(next_id: int) -> bytes:
    return b'{"type":"reserve","next_id":%d}' % next_id


def checkpoint_record(next_id: int, created_at: float) -> bytes:
    return orjson.dumps({"type": CHECKPOINT, "next_id": next_id, "created_at": created_at})


def item_from_submit(rec: dict[str, Any]) -> QueueMessageWithProvenance:
    canon = rec["message"]
    item = QueueMessageWithProvenance.__new__(QueueMessageWithProvenance)
    item.message = QueueMessage._trusted(_KINDS[canon["kind"]], canon)
    item.message_id = rec["message_id"]
    item.created_at = rec["created_at"]
    item.submitted_by = rec["submitted_by"]
    item.persisted = True
    item.broadcast = rec["broadcast"]
    item.priority = item.message.priority
    item.mode = _MODES[rec["mode"]]
    item.upgraded = rec["upgraded"]
    item.delivery_count = rec["delivery_count"]
    return item


@dataclass
class Replayed:
    """The state a sequence of records describes."""

    live: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> submit record
    next_id: int = 1
    submits: int = 0
    consumes: int = 0

    def items(self) -> list[QueueMessageWithProvenance]:
        return [item_from_submit(rec) for rec in self.live.values()]


def replay(records: list[dict[str, Any]], *, path: str = "<log>") -> Replayed:
    out = Replayed()
    live = out.live
    next_id = 1
    submits = consumes = 0
    try:
        for rec in records:
            kind = rec["type"]
            if kind == SUBMIT:
                mid = rec["message_id"]
                live[mid] = rec
                submits += 1
                if mid >= next_id:
                    next_id = mid + 1
            elif kind == CONSUME:
                live.pop(rec["message_id"], None)
                consumes += 1
            elif kind in (RESERVE, CHECKPOINT):
                next_id = max(next_id, rec["next_id"])
            else:
                raise LogCorrupt(
                    f"{path}: unknown record type {kind!r} (written by a newer version?)",
                    path=path,
                    offset=-1,
                    next_valid_offset=None,
                )
    except (KeyError, TypeError) as exc:
        raise LogCorrupt(
            f"{path}: malformed record ({exc!r}) inside a checksummed frame",
            path=path,
            offset=-1,
            next_valid_offset=None,
        ) from None
    out.next_id = next_id
    out.submits = submits
    out.consumes = consumes
    return out
