"""The node endpoint's lease bookkeeping, pure: slots, settlement, expiry, hand-back.

A hypothesis state machine drives deliveries, acks from any connection, expiry by a
clock it moves itself, unsubscribes and disconnects, and checks against a plain model
that no lease is ever both held and handed back, that a subscription never holds more
than ``max_unacked``, and that every lease ends exactly one way.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sidecar.daemon.node_subscriptions import (
    ConnectionSubscriptions,
    LeaseOwners,
    TooManySubscriptions,
)


def test_a_slot_frees_on_ack_and_on_expiry() -> None:
    conn = ConnectionSubscriptions(max_subscriptions=4)
    conn.add_messages("s", max_unacked=2, lease_timeout=10.0)
    sub, owners = conn.messages["s"], LeaseOwners()
    owners.delivered(sub, 1, deadline=10.0)
    owners.delivered(sub, 2, deadline=20.0)
    assert not owners.has_slot(sub, now=0.0)
    assert owners.settled(1) is sub
    assert owners.has_slot(sub, now=0.0)
    owners.delivered(sub, 3, deadline=5.0)
    assert not owners.has_slot(sub, now=4.9)
    assert owners.has_slot(sub, now=5.0)  # lease 3 expired: the queue has it back
    assert owners.settled(3) is None  # a late ack frees nothing twice
    assert sub.next_deadline() == 20.0


def test_unsubscribe_and_close_hand_back_what_is_held() -> None:
    conn = ConnectionSubscriptions(max_subscriptions=4)
    conn.add_messages("a", 4, 10.0)
    conn.add_messages("b", 4, 10.0)
    owners = LeaseOwners()
    owners.delivered(conn.messages["a"], 1, 10.0)
    owners.delivered(conn.messages["b"], 2, 10.0)
    owners.delivered(conn.messages["b"], 3, 10.0)
    assert conn.remove_messages("a") == [1]
    assert conn.remove_messages("a") is None
    assert sorted(conn.close()) == [2, 3]
    assert conn.count() == 0


def test_subscriptions_per_connection_are_capped() -> None:
    conn = ConnectionSubscriptions(max_subscriptions=2)
    conn.add_messages("a", 1, 1.0)
    conn.add_tier("t")
    with pytest.raises(TooManySubscriptions, match=r"node\.max_subscriptions = 2"):
        conn.add_tier("u")
    assert conn.remove_tier("t")
    assert not conn.remove_tier("t")
    conn.add_tier("u")


class LeaseBook(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.owners = LeaseOwners()
        self.conns = {c: ConnectionSubscriptions(max_subscriptions=3) for c in ("x", "y")}
        self.next_lease = 1
        self.next_sub = 1
        # the model: lease id -> (connection, subscription, deadline) while it is held
        self.held: dict[int, tuple[str, str, float]] = {}
        self.ended: set[int] = set()

    @rule(conn=st.sampled_from(["x", "y"]), unacked=st.integers(1, 3))
    def subscribe(self, conn: str, unacked: int) -> None:
        c = self.conns[conn]
        if c.count() >= c.max_subscriptions:
            return
        c.add_messages(f"s{self.next_sub}", unacked, 5.0)
        self.next_sub += 1

    @rule(conn=st.sampled_from(["x", "y"]), pick=st.integers(0, 10))
    def deliver(self, conn: str, pick: int) -> None:
        subs = list(self.conns[conn].messages.values())
        if not subs:
            return
        sub = subs[pick % len(subs)]
        expired = {lid for lid, (_, s, d) in self.held.items() if s == sub.id and d <= self.now}
        if not self.owners.has_slot(sub, self.now):
            return
        for lid in expired:  # has_slot forgot them: the queue took them back
            self.ended.add(lid)
            del self.held[lid]
        lease_id, self.next_lease = self.next_lease, self.next_lease + 1
        self.owners.delivered(sub, lease_id, self.now + 5.0)
        self.held[lease_id] = (conn, sub.id, self.now + 5.0)

    @precondition(lambda self: self.next_lease > 1)
    @rule(pick=st.integers(0, 1000))
    def settle_anywhere(self, pick: int) -> None:
        lease_id = 1 + pick % (self.next_lease - 1)
        sub = self.owners.settled(lease_id)
        if lease_id in self.held and self.held[lease_id][2] > self.now:
            assert sub is not None
            assert sub.id == self.held[lease_id][1]
            del self.held[lease_id]
            self.ended.add(lease_id)
        elif lease_id in self.held:  # expired but not yet noticed: still freed once
            del self.held[lease_id]
            self.ended.add(lease_id)

    @rule(dt=st.floats(0.0, 4.0))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(conn=st.sampled_from(["x", "y"]), pick=st.integers(0, 10))
    def unsubscribe(self, conn: str, pick: int) -> None:
        ids = list(self.conns[conn].messages)
        if not ids:
            return
        sub_id = ids[pick % len(ids)]
        back = self.conns[conn].remove_messages(sub_id)
        assert back is not None
        self.owners.forget(back)
        expect = {lid for lid, (_, s, _) in self.held.items() if s == sub_id}
        assert set(back) <= expect  # only what it held; expired ones may be gone already
        for lid in expect:
            del self.held[lid]
            self.ended.add(lid)

    @rule(conn=st.sampled_from(["x", "y"]))
    def disconnect(self, conn: str) -> None:
        back = self.conns[conn].close()
        self.owners.forget(back)
        expect = {lid for lid, (c, _, _) in self.held.items() if c == conn}
        assert set(back) <= expect
        for lid in expect:
            del self.held[lid]
            self.ended.add(lid)

    @invariant()
    def never_more_than_max_unacked(self) -> None:
        for c in self.conns.values():
            for sub in c.messages.values():
                assert len(sub.held) <= sub.max_unacked

    @invariant()
    def held_and_ended_are_apart(self) -> None:
        assert not (set(self.held) & self.ended)
        for c in self.conns.values():
            for sub in c.messages.values():
                assert not (set(sub.held) & self.ended)

    @invariant()
    def owners_know_exactly_what_live_subscriptions_hold(self) -> None:
        live = sum(len(sub.held) for c in self.conns.values() for sub in c.messages.values())
        assert len(self.owners) == live  # nothing leaks after an unsubscribe or disconnect


TestLeaseBook = LeaseBook.TestCase
TestLeaseBook.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
