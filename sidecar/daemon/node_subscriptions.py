"""Who holds which lease on the node endpoint: pure bookkeeping, ``now`` passed in.

A message subscription may hold at most ``max_unacked`` leases at a time; an ack or a
release (from any connection) frees a slot, so does a lease's deadline passing (the
queue has taken that message back by then). When a subscription or its connection
ends, the leases it still holds are handed to the caller to give back to the queue.
The I/O shell (``node_endpoint``) leases, sends and releases; this module decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.messages import Kind


class TooManySubscriptions(Exception):
    """A connection asked for more subscriptions than ``node.max_subscriptions``."""


@dataclass
class MessageSubscription:
    id: str
    max_unacked: int
    lease_timeout: float
    kinds: frozenset[Kind] | None = None  # only these kinds are delivered; None: all
    held: dict[int, float] = field(default_factory=dict)  # lease id -> deadline

    def expire(self, now: float) -> list[int]:
        """Forget leases past their deadline (the queue took those messages back)."""
        gone = [lease_id for lease_id, deadline in self.held.items() if deadline <= now]
        for lease_id in gone:
            del self.held[lease_id]
        return gone

    def next_deadline(self) -> float | None:
        return min(self.held.values(), default=None)


@dataclass
class ConnectionSubscriptions:
    """The subscriptions of one connection."""

    max_subscriptions: int
    messages: dict[str, MessageSubscription] = field(default_factory=dict)
    tier: set[str] = field(default_factory=set)

    def count(self) -> int:
        return len(self.messages) + len(self.tier)

    def _check_room(self) -> None:
        if self.count() >= self.max_subscriptions:
            raise TooManySubscriptions(
                f"this connection has {self.count()} subscriptions "
                f"(limit node.max_subscriptions = {self.max_subscriptions}); unsubscribe first"
            )

    def add_messages(
        self,
        sub_id: str,
        max_unacked: int,
        lease_timeout: float,
        kinds: frozenset[Kind] | None = None,
    ) -> None:
        self._check_room()
        self.messages[sub_id] = MessageSubscription(sub_id, max_unacked, lease_timeout, kinds)

    def add_tier(self, sub_id: str) -> None:
        self._check_room()
        self.tier.add(sub_id)

    def remove_messages(self, sub_id: str) -> list[int] | None:
        """The leases to give back, or None when there is no such subscription."""
        sub = self.messages.pop(sub_id, None)
        return None if sub is None else list(sub.held)

    def remove_tier(self, sub_id: str) -> bool:
        if sub_id not in self.tier:
            return False
        self.tier.discard(sub_id)
        return True

    def close(self) -> list[int]:
        """Every lease still held, to give back; no subscription is left."""
        held = [lease_id for sub in self.messages.values() for lease_id in sub.held]
        self.messages.clear()
        self.tier.clear()
        return held


class LeaseOwners:
    """Lease id -> the subscription holding it, across every connection."""

    def __init__(self) -> None:
        self._owner: dict[int, MessageSubscription] = {}

    def delivered(self, sub: MessageSubscription, lease_id: int, deadline: float) -> None:
        sub.held[lease_id] = deadline
        self._owner[lease_id] = sub

    def has_slot(self, sub: MessageSubscription, now: float) -> bool:
        """Whether ``sub`` may take one more lease, after forgetting the expired ones."""
        self.forget(sub.expire(now))
        return len(sub.held) < sub.max_unacked

    def settled(self, lease_id: int) -> MessageSubscription | None:
        """An ack or release: the subscription whose slot is now free, if any."""
        sub = self._owner.pop(lease_id, None)
        if sub is not None:
            sub.held.pop(lease_id, None)
        return sub

    def forget(self, lease_ids: list[int]) -> None:
        for lease_id in lease_ids:
            self._owner.pop(lease_id, None)

    def __len__(self) -> int:
        return len(self._owner)
