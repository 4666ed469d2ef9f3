"""The durable live messages by id, which a compaction can read a piece at a time.

A compaction writes the new log from a snapshot of these messages, a chunk per step,
while the queue goes on. Copying a million entries (a list, or the dict) in one step
held the event loop for tens of milliseconds, and every young-generation collection
that followed scanned the copy again. So instead `pin()` stops changes to the dict
itself: until `unpin()`, additions and removals go to a small overlay, the pinned
dict can be iterated across any number of steps (and threads, one at a time), and
`unpin()` folds the overlay back in (work in proportion to what changed meanwhile).

Recovered messages may still be their submit records (`sidecar.wal.Live`): `get`
builds such a message on first use and keeps it in place of its record, so every
reader gets the same object; what `pin()` iterates may be either (`live_record`
writes both).
"""

from __future__ import annotations

from collections.abc import Iterator

from sidecar.messages import QueueMessageWithProvenance
from sidecar.wal import Live, live_item

Item = QueueMessageWithProvenance


class DurableLive:
    __slots__ = ("_added", "_base", "_removed")

    def __init__(self, base: dict[int, Live] | None = None) -> None:
        """`base`: the messages (or their records) by id (taken over, not copied)."""
        self._base: dict[int, Live] = {} if base is None else base
        self._added: dict[int, Item] | None = None  # while pinned: what came since
        self._removed: set[int] = set()  # while pinned: ids of the pinned dict gone since

    def add(self, item: Item) -> None:
        mid = item.message_id
        if self._added is None:
            self._base[mid] = item
            return
        self._added[mid] = item
        if mid in self._base:
            self._removed.add(mid)  # replaced: the overlay's entry counts

    def discard(self, message_id: int) -> None:
        if self._added is None:
            self._base.pop(message_id, None)
            return
        self._added.pop(message_id, None)
        if message_id in self._base:
            self._removed.add(message_id)

    def get(self, message_id: int) -> Item | None:
        if self._added is not None:
            item = self._added.get(message_id)
            if item is not None or message_id in self._removed:
                return item
        value = self._base.get(message_id)
        if not isinstance(value, list):
            return value
        built = live_item(value)  # a recovered message's first use
        if self._added is None:
            self._base[message_id] = built
        else:  # the pinned dict keeps its record; the overlay holds the message
            self._added[message_id] = built
            self._removed.add(message_id)
        return built

    def item(self, message_id: int) -> Item:
        """`get` of a message known to be live."""
        item = self.get(message_id)
        if item is None:
            raise KeyError(message_id)
        return item

    def __contains__(self, message_id: int) -> bool:
        if self._added is not None and (message_id in self._added or message_id in self._removed):
            return message_id in self._added
        return message_id in self._base

    def __len__(self) -> int:
        if self._added is None:
            return len(self._base)
        return len(self._base) - len(self._removed) + len(self._added)

    def held_at_pin(self, message_id: int) -> bool:
        """Whether the message was live when `pin()` was called (while pinned)."""
        return message_id in self._base

    @property
    def pinned(self) -> bool:
        return self._added is not None

    def pin(self) -> Iterator[Live]:
        """The messages (or their records) live now, to be read at leisure until
        `unpin()`."""
        if self._added is not None:
            raise RuntimeError("already pinned")
        self._added = {}
        return iter(self._base.values())

    def unpin(self) -> None:
        """Fold what changed since `pin()` back in; cheap if nothing is pinned."""
        added, self._added = self._added, None
        if added is None:
            return
        base = self._base
        for mid in self._removed:
            item = added.pop(mid, None)
            if item is None:
                base.pop(mid, None)
            else:  # replaced, or built from its record: in its place (in id order, which
                # the next recovery reads without sorting)
                base[mid] = item
        self._removed = set()
        base.update(added)
