"""Idempotent submit: the index of recent ``(principal, dedup_id)`` keys. No I/O, no clock.

A submit that carries a ``dedup_id`` first looks its key up here. A key seen within the
window answers with the message id it got the first time, and nothing is stored again.
A new key is *reserved* while its submit is in flight (a concurrent submit with the same
key waits for it) and *recorded* once the submit is done.

Bounds: an entry lives for ``window`` seconds after the first submit (wall-clock time,
so the window survives a restart), and the index holds at most ``max_entries`` keys of
local producers, reserved ones included. When it is full a *new* key is refused with
``QueueFull``: a key that cannot be remembered would be accepted twice on a retry.
Known keys are still answered.

Relay keys (``("peer:<name>", "relay:<origin id>")``, docs/relay.md) expire by time
only until that peer sends its first *low watermark*: the lowest origin id it may
still send. From then on the peer's relay keys are *pinned*: they stay until a
watermark passes them (the sender can no longer resend those ids), however long the
link is down. Each peer's relay keys (pinned or not, reserved ones included) are
counted apart, bounded by ``max_peer_keys`` each, and never count against
``max_entries``: a peer cannot fill the producers' index nor another peer's. A peer at
its bound gets ``QueueFull`` for a new key, except for the key at its watermark (the
message its sender lacks first: storing it lets the next watermark free the others),
so a peer holds at most ``max_peer_keys + 1`` keys.

Durability is the shell's business (docs/wal-format.md): a recorded entry is
``durable`` when a log record holds it; entries of async submits are not, until a
graceful close writes them.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from sidecar.errors import InvalidMessage, QueueFull

DEFAULT_DEDUP_WINDOW = 600.0
DEFAULT_DEDUP_ENTRIES = 100_000
DEFAULT_PEER_KEYS = 100_000
MAX_DEDUP_ID_CHARS = 128
RELAY_PRINCIPAL_PREFIX = "peer:"
RELAY_ID_PREFIX = "relay:"

DedupKey = tuple[str, str]  # (principal, dedup_id)


@dataclass(frozen=True, slots=True)
class DedupLimits:
    window: float = DEFAULT_DEDUP_WINDOW
    max_entries: int = DEFAULT_DEDUP_ENTRIES  # local producers' keys
    max_peer_keys: int = DEFAULT_PEER_KEYS  # each relaying peer's keys

    def __post_init__(self) -> None:
        if not self.window > 0:
            raise ValueError(f"the dedup window must be positive, not {self.window}")
        if self.max_entries < 1:
            raise ValueError(f"the dedup entry limit must be at least 1, not {self.max_entries}")
        if self.max_peer_keys < 1:
            raise ValueError(
                f"the relay key limit per peer must be at least 1, not {self.max_peer_keys}"
            )


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


def relay_principal(peer: str) -> str:
    """Who relayed messages from `peer` are submitted by (their dedup keys' principal)."""
    return f"{RELAY_PRINCIPAL_PREFIX}{peer}"


def relay_key(peer: str, origin_id: int) -> DedupKey:
    """The dedup key of message `origin_id` relayed by `peer`."""
    return (relay_principal(peer), f"{RELAY_ID_PREFIX}{origin_id}")


def relay_origin_id(key: DedupKey) -> int | None:
    """The origin id of a relay key, None for any other key."""
    principal, dedup_id = key
    if not principal.startswith(RELAY_PRINCIPAL_PREFIX) or not dedup_id.startswith(RELAY_ID_PREFIX):
        return None
    digits = dedup_id[len(RELAY_ID_PREFIX) :]
    return int(digits) if digits.isascii() and digits.isdigit() else None


class DedupIndex:
    def __init__(self, limits: DedupLimits | None = None) -> None:
        self.limits = limits or DedupLimits()
        self._entries: dict[DedupKey, DedupEntry] = {}
        self._reserved: set[DedupKey] = set()
        self._order: deque[tuple[float, DedupKey]] = deque()  # (at, key), oldest first
        self._floors: dict[str, int] = {}  # relay principal -> its highest low watermark
        self._pinned: dict[str, list[int]] = {}  # relay principal -> heap of origin ids
        # keys held (recorded or reserved): local producers', and each relay principal's
        self._producer_keys = 0
        self._peer_keys: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries) + len(self._reserved)

    def count(self, principal: str | None = None) -> int:
        """Keys held (reserved ones included) by relay principal `principal`, or with
        None by the local producers (every key that is not a relay key)."""
        if principal is None:
            return self._producer_keys
        return self._peer_keys.get(principal, 0)

    def _counted(self, key: DedupKey, n: int) -> None:
        if relay_origin_id(key) is None:
            self._producer_keys += n
            return
        held = self._peer_keys.get(key[0], 0) + n
        if held:
            self._peer_keys[key[0]] = held
        else:
            del self._peer_keys[key[0]]

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
        origin_id = relay_origin_id(key)
        if origin_id is None:
            if self._producer_keys >= self.limits.max_entries:
                raise QueueFull(
                    f"the dedup index holds {self._producer_keys} ids (limit "
                    f"{self.limits.max_entries}, window {self.limits.window:g} s); retry later "
                    "or raise dedup.max_entries"
                )
        else:
            self._check_peer_bound(key[0], origin_id)
        self._reserved.add(key)
        self._counted(key, 1)

    def _check_peer_bound(self, principal: str, origin_id: int) -> None:
        held, bound = self._peer_keys.get(principal, 0), self.limits.max_peer_keys
        floor = self._floors.get(principal)
        if held < bound or (floor is not None and origin_id <= floor):
            return  # the key at the watermark is always taken: the next one frees the rest
        peer = principal[len(RELAY_PRINCIPAL_PREFIX) :]
        why = (
            f"its low watermark is {floor}, so they are kept until a later watermark passes "
            f"them (the message {peer} lacks first holds it: see `peers` at {peer})"
            if floor is not None
            else f"they expire after {self.limits.window:g} s"
        )
        raise QueueFull(
            f"peer {peer} holds {held} relay keys (relay.max_peer_keys = {bound}); {why}; "
            "retry later"
        )

    def unreserve(self, key: DedupKey) -> None:
        """The submit failed: the key is free again."""
        if key in self._reserved:
            self._reserved.remove(key)
            self._counted(key, -1)

    def record(self, key: DedupKey, message_id: int, at: float, *, durable: bool) -> None:
        """The submit is done (`at`: its wall-clock time); also used to restore entries."""
        reserved = key in self._reserved
        if reserved:
            self._reserved.remove(key)  # counted already: now as an entry
        old = self._entries.get(key)
        if old is not None:
            # the same key restored twice (a submit record and a compaction record)
            self._entries[key] = DedupEntry(old.message_id, old.at, old.durable or durable)
            if reserved:
                self._counted(key, -1)
            return
        origin_id = relay_origin_id(key)
        if origin_id is not None and key[0] in self._floors:
            if origin_id < self._floors[key[0]]:
                if reserved:
                    self._counted(key, -1)
                return  # passed by a watermark already (a replayed record)
            self._entries[key] = DedupEntry(message_id, at, durable)
            heapq.heappush(self._pinned[key[0]], origin_id)
            if not reserved:
                self._counted(key, 1)
            return
        self._entries[key] = DedupEntry(message_id, at, durable)
        if not reserved:
            self._counted(key, 1)
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
        floors = self._floors
        while order and order[0][0] <= horizon:
            _, key = order.popleft()
            if key[0] in floors and relay_origin_id(key) is not None:
                continue  # pinned since it was recorded: a watermark releases it
            if entries.pop(key, None) is not None:
                self._counted(key, -1)
                n += 1
        return n

    def floor(self, principal: str) -> int | None:
        """The highest low watermark relay principal `principal` sent, if any."""
        return self._floors.get(principal)

    def advances(self, principal: str, watermark: int) -> bool:
        """Whether `watermark` would change anything (worth logging)."""
        floor = self._floors.get(principal)
        return floor is None or watermark > floor

    def advance(self, principal: str, watermark: int) -> int:
        """Relay principal `principal` will never send an origin id below `watermark`
        again: pin its relay keys (no time expiry) and drop those below; how many."""
        floor = self._floors.get(principal)
        if floor is None:
            heap = [
                oid
                for key in self._entries
                if key[0] == principal and (oid := relay_origin_id(key)) is not None
            ]
            heapq.heapify(heap)
            self._pinned[principal] = heap
        elif watermark <= floor:
            return 0
        self._floors[principal] = watermark
        heap = self._pinned[principal]
        peer = principal[len(RELAY_PRINCIPAL_PREFIX) :]
        n = 0
        while heap and heap[0] < watermark:
            key = relay_key(peer, heapq.heappop(heap))
            if self._entries.pop(key, None):
                self._counted(key, -1)
                n += 1
        return n

    def floors(self) -> dict[str, int]:
        """A copy of every relay principal's watermark (for compaction)."""
        return self._floors.copy()

    def entries(self) -> dict[DedupKey, DedupEntry]:
        """A copy of the recorded entries (one C-level copy: safe to take from a thread
        while the loop thread records more)."""
        return self._entries.copy()
