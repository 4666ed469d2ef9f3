"""Hypothesis stateful test: the pure relay backlog against a plain model.

Model per peer: the ids it lacks, those in flight to it, those held (with a reason).
`take` must hand out the smallest ids that are lacked, not in flight and not held, in
increasing order; a message is retained while any peer lacks it. The low watermark
is the smallest id a peer lacks (else the next id), and no id below a watermark once
given is ever handed out to that peer again (what lets the receiver forget its keys).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sidecar import QueueMessageWithProvenance
from sidecar.relay_backlog import RelayBacklog
from tests.core.helpers import block

PEERS = ("bob", "charlie")
peer_names = st.sampled_from(PEERS)


class RelayModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.backlog = RelayBacklog(PEERS)
        self.next_id = 1
        self.items: dict[int, QueueMessageWithProvenance] = {}
        self.lacking = {p: set[int]() for p in PEERS}
        self.in_flight = {p: set[int]() for p in PEERS}
        self.held = {p: set[int]() for p in PEERS}
        self.floor = dict.fromkeys(PEERS, 0)  # the highest watermark given per peer

    @rule(have=st.sets(peer_names))
    def add(self, have: set[str]) -> None:
        mid = self.next_id
        self.next_id += 1
        item = QueueMessageWithProvenance(block(mid), mid, float(mid), "t", broadcast=True)
        self.items[mid] = item
        self.backlog.add(item, have)
        for peer in PEERS:
            if peer not in have:
                self.lacking[peer].add(mid)

    @rule(peer=peer_names, limit=st.integers(1, 4), hold_every=st.sampled_from([0, 2, 3]))
    def take(self, peer: str, limit: int, hold_every: int) -> None:
        def why(item: QueueMessageWithProvenance) -> str | None:
            return "held" if hold_every and item.message_id % hold_every == 0 else None

        got = [i.message_id for i in self.backlog.take(peer, limit, why)]
        waiting = sorted(self.lacking[peer] - self.in_flight[peer] - self.held[peer])
        expected: list[int] = []
        for mid in waiting:
            if len(expected) == limit:
                break
            if why(self.items[mid]) is not None:
                self.held[peer].add(mid)
            else:
                expected.append(mid)
        assert got == expected
        assert all(mid >= self.floor[peer] for mid in got)
        self.in_flight[peer].update(got)

    @rule(peer=peer_names, data=st.data())
    @precondition(lambda self: any(self.in_flight.values()))
    def give_back(self, peer: str, data: st.DataObject) -> None:
        if not self.in_flight[peer]:
            return
        back = data.draw(st.sets(st.sampled_from(sorted(self.in_flight[peer]))))
        self.backlog.give_back(peer, [self.items[m] for m in back])
        self.in_flight[peer] -= back

    @rule(peer=peer_names, data=st.data())
    def mark(self, peer: str, data: st.DataObject) -> None:
        if not self.lacking[peer]:
            return
        mid = data.draw(st.sampled_from(sorted(self.lacking[peer])))
        self.backlog.mark(peer, mid)
        self.lacking[peer].discard(mid)
        self.in_flight[peer].discard(mid)
        self.held[peer].discard(mid)

    @rule(peer=peer_names)
    def unhold(self, peer: str) -> None:
        self.backlog.unhold(peer)
        self.held[peer].clear()

    @rule(peer=peer_names)
    def low_watermark(self, peer: str) -> None:
        low = self.backlog.low_watermark(peer, self.next_id)
        assert low == min(self.lacking[peer], default=self.next_id)
        self.floor[peer] = max(self.floor[peer], low)

    @invariant()
    def counts_and_retention_agree(self) -> None:
        for peer in PEERS:
            view = self.backlog.backlog(peer, now=1e9)
            assert view.count == len(self.lacking[peer])
            assert view.in_flight == len(self.in_flight[peer])
            assert set(view.held) == self.held[peer]
            assert view.bytes == sum(self.items[m].message.encoded_size for m in self.lacking[peer])
        for mid in self.items:
            assert self.backlog.retains(mid) == any(mid in self.lacking[p] for p in PEERS)


TestRelayModel = RelayModel.TestCase
TestRelayModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
