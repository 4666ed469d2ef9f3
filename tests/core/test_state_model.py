"""Hypothesis stateful test: the pure queue state against a plain model, including
leases restricted to some kinds."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sidecar import (
    AlreadyConsumed,
    Kind,
    NotFound,
    Priority,
    QueueFull,
    QueueLimits,
    QueueMessageWithProvenance,
)
from sidecar.state import QueueState
from tests.core.helpers import block, gossip, telemetry, tx, vote

_MAKERS = [block, vote, tx, gossip, telemetry]
_KINDS = [Kind.BLOCK_IMPORT, Kind.VOTE, Kind.TRANSACTION, Kind.GOSSIP, Kind.TELEMETRY]
# a filter: None (every kind) or a non-empty subset, including kinds never submitted
_FILTERS = st.none() | st.frozensets(st.sampled_from(list(Kind)), min_size=1)


class QueueModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = QueueState(QueueLimits(max_messages=12))
        self.now = 0.0
        self.next_id = 1
        # model: ready = {id: (priority, delivery_count)}; leases = {lease_id: (id, deadline)}
        self.ready: dict[int, tuple[int, int]] = {}
        self.leases: dict[int, tuple[int, float, int]] = {}
        self.ended: set[int] = set()
        self.consumed: set[int] = set()
        self.prio_of: dict[int, int] = {}
        self.kind_of: dict[int, Kind] = {}

    @initialize(
        recovered=st.lists(st.tuples(st.integers(0, len(_MAKERS) - 1), st.booleans()), max_size=10),
        data=st.data(),
    )
    def recover(self, recovered: list[tuple[int, bool]], data: st.DataObject) -> None:
        """Start, as an open does, from a bulk load of recovered messages: in the log's
        order (ids rising) or shuffled, some with a priority not their kind's."""
        items = []
        for kind, odd_priority in recovered:
            msg = _MAKERS[kind](self.next_id)
            item = QueueMessageWithProvenance(msg, self.next_id, self.now, "t")
            if odd_priority:
                item.priority = Priority(data.draw(st.sampled_from(list(Priority))))
            items.append(item)
            self.prio_of[self.next_id] = int(item.priority)
            self.kind_of[self.next_id] = _KINDS[kind]
            self.ready[self.next_id] = (int(item.priority), 0)
            self.next_id += 1
        self.state.load(data.draw(st.permutations(items)))

    def _expected_next(self, kinds: frozenset[Kind] | None = None) -> int | None:
        ready = [i for i in self.ready if kinds is None or self.kind_of[i] in kinds]
        if not ready:
            return None
        return min(ready, key=lambda i: (-self.ready[i][0], i))

    def _expire_model(self) -> None:
        for lid, (mid, deadline, dc) in list(self.leases.items()):
            if deadline <= self.now:
                del self.leases[lid]
                self.ended.add(lid)
                self.ready[mid] = (self.prio_of[mid], dc + 1)

    @rule(kind=st.integers(0, len(_MAKERS) - 1))
    def submit(self, kind: int) -> None:
        msg = _MAKERS[kind](self.next_id)
        try:
            self.state.admit(msg.encoded_size)
        except QueueFull:
            assert len(self.ready) + len(self.leases) >= 12
            return
        item = QueueMessageWithProvenance(msg, self.next_id, self.now, "t")
        self.state.push(item)
        self.prio_of[self.next_id] = int(msg.priority)
        self.kind_of[self.next_id] = _KINDS[kind]
        self.ready[self.next_id] = (int(msg.priority), 0)
        self.next_id += 1

    @rule(kinds=_FILTERS)
    def take(self, kinds: frozenset[Kind] | None) -> None:
        self.state.expire(self.now)
        self._expire_model()
        expected = self._expected_next(kinds)
        item = self.state.take(kinds)
        if expected is None:
            assert item is None
            return
        assert item is not None
        assert item.message_id == expected
        assert item.delivery_count == self.ready[expected][1]
        self.state.forget(item.message.encoded_size)
        del self.ready[expected]
        self.consumed.add(expected)

    @rule(timeout=st.sampled_from([0.5, 1.0, 5.0]), kinds=_FILTERS)
    def lease(self, timeout: float, kinds: frozenset[Kind] | None) -> None:
        self.state.expire(self.now)
        self._expire_model()
        expected = self._expected_next(kinds)
        assert self.state.ready_of(kinds) == sum(
            kinds is None or self.kind_of[i] in kinds for i in self.ready
        )
        lease = self.state.lease(self.now, timeout, kinds=kinds)
        if expected is None:
            assert lease is None
            return
        assert lease is not None
        assert lease.message_id == expected
        assert kinds is None or lease.item.kind in kinds
        _, dc = self.ready.pop(expected)
        self.leases[lease.lease_id] = (expected, self.now + timeout, dc)

    @precondition(lambda self: bool(self.leases) or bool(self.ended))
    @rule(data=st.data(), release=st.booleans())
    def ack_or_release(self, data: st.DataObject, release: bool) -> None:
        self.state.expire(self.now)
        self._expire_model()
        choices = sorted(self.leases) + sorted(self.ended)
        lid = data.draw(st.sampled_from(choices))
        if lid in self.ended:
            try:
                self.state.end_lease(lid)
                raise AssertionError("a stale lease was accepted")
            except AlreadyConsumed:
                return
        mid, _, dc = self.leases.pop(lid)
        self.ended.add(lid)
        if release:
            self.state.release(lid)
            self.ready[mid] = (self.prio_of[mid], dc + 1)
        else:
            lease = self.state.end_lease(lid)
            assert lease.message_id == mid
            self.state.forget(lease.item.message.encoded_size)
            self.consumed.add(mid)

    @rule()
    def unknown_lease(self) -> None:
        try:
            self.state.end_lease(10**9)
            raise AssertionError("an unknown lease was accepted")
        except NotFound:
            pass

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 3.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @invariant()
    def counts_agree(self) -> None:
        assert self.state.ready + self.state.leased == len(self.ready) + len(self.leases)
        assert self.state.count == len(self.ready) + len(self.leases)
        assert not (set(self.ready) & self.consumed)
        depth = self.state.depth_by_priority()
        assert sum(depth.values()) == len(self.ready)
        for prio, n in depth.items():
            # depth is by kind (a message's priority is its kind's, but for the odd
            # recovered ones above)
            assert n == sum(self.kind_of[i].priority == Priority[prio.upper()] for i in self.ready)


TestQueueModel = QueueModel.TestCase
TestQueueModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
