"""Idempotent submit: the index of recent ``(principal, dedup_id)`` keys. No I/O, no clock.

A submit that carries a ``dedup_id`` first looks its key up here. A key seen within the
window answers with the message id it got the first time, and nothing is stored again.
A new key is *reserved* while its submit is in flight (a concurrent submit with the same
key waits for it) and *recorded* once the submit is done.

Bounds: an entry lives for ``window`` seconds after the first submit (wall-clock time,
so the window survives a restart), and the index holds at most ``max_entries`` keys,
reserved ones included. When it is full a *new* key is refused with ``QueueFull``: a
key that cannot be remembered would be accepted twice on a retry. Known keys are
still answered.

Durability is the shell's business (docs/wal-format.md): a recorded entry is
``durable`` when a log record holds it; entries of async submits are not, until a
graceful close writes them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sidecar.errors import InvalidMessage, QueueFull

DEFAULT_DEDUP_WINDOW = 600.0
DEFAULT_DEDUP_ENTRIES = 100_000
MAX_DEDUP_ID_CHARS = 128

DedupKey = tuple[str, str]  # (principal, dedup_id)


@dataclass(frozen=True, slots=True)
class DedupLimits:
    window: float = DEFAULT_DEDUP_WINDOW
    max_entries: int = DEFAULT_DEDUP_ENTRIES

    def __post_init__(self) -> None:
        if not self.window > 0:
            raise ValueError(f"the dedup window must be positive, not {self.window}")
        if self.max_entries < 1:
            raise ValueError(f"the dedup entry limit must be at least 1, not {self.max_entries}")


@dataclass(frozen=True, slots=True)
class DedupEntry:
    message_id: int
    at: float  # wall-clock time of the first submit
    durable: bool


@dataclass(frozen=True, slots=True)
class Submitted:
    """What a submit did: the message's id, and whether it was stored before (a
    `dedup_id` seen within the window)."""

    message_id: int
    duplicate: bool


def check_dedup_id(value: object) -> str:
    """A valid ``dedup_id`` (a string of 1-128 characters) or `InvalidMessage`."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_DEDUP_ID_CHARS:
        raise InvalidMessage(f"'dedup_id' must be a string of 1-{MAX_DEDUP_ID_CHARS} characters")
    return value


class DedupIndex:
    def __init__(self, limits: DedupLimits | None = None) -> None:
        self.limits = limits or DedupLimits()
        self._entries: dict[DedupKey, DedupEntry] = {}
        self._reserved: set[DedupKey] = set()
        self._order: deque[tuple[float, DedupKey]] = deque()  # (at, key), oldest first

    def __len__(self) -> int:
        return len(self._entries) + len(self._reserved)

    def find(self, key: DedupKey, now: float) -> DedupEntry | None:
        """The live entry for `key`, after dropping every expired one."""
        self.expire(now)
        return self._entries.get(key)

    def is_reserved(self, key: DedupKey) -> bool:
        return key in self._reserved

    def reserve(self, key: DedupKey, now: float) -> None:
        """Hold a new key while its submit is in flight, or raise `QueueFull`."""
        self.expire(now)
        if key in self._entries or key in self._reserved:
            raise ValueError(f"dedup key {key!r} is already known")
        if len(self) >= self.limits.max_entries:
            raise QueueFull(
                f"the dedup index holds {len(self)} ids (limit {self.limits.max_entries}, "
                f"window {self.limits.window:g} s); retry later or raise dedup.max_entries"
            )
        self._reserved.add(key)

    def unreserve(self, key: DedupKey) -> None:
        """The submit failed: the key is free again."""
        self._reserved.discard(key)

    def record(self, key: DedupKey, message_id: int, at: float, *, durable: bool) -> None:
        """The submit is done (`at`: its wall-clock time); also used to restore entries."""
        self._reserved.discard(key)
        old = self._entries.get(key)
        if old is not None:
            # the same key restored twice (a submit record and a compaction record)
            self._entries[key] = DedupEntry(old.message_id, old.at, old.durable or durable)
            return
        self._entries[key] = DedupEntry(message_id, at, durable)
        order = self._order
        if order and at < order[-1][0]:
            at = order[-1][0]  # a clock step back: keep the queue sorted, expire no earlier
        order.append((at, key))

    def mark_durable(self, key: DedupKey) -> None:
        entry = self._entries.get(key)
        if entry is not None and not entry.durable:
            self._entries[key] = DedupEntry(entry.message_id, entry.at, True)

    def expire(self, now: float) -> int:
        """Drop entries older than the window; how many."""
        horizon = now - self.limits.window
        order, entries = self._order, self._entries
        n = 0
        while order and order[0][0] <= horizon:
            _, key = order.popleft()
            if entries.pop(key, None) is not None:
                n += 1
        return n

    def entries(self) -> dict[DedupKey, DedupEntry]:
        """A copy of the recorded entries (one C-level copy: safe to take from a thread
        while the loop thread records more)."""
        return self._entries.copy()
