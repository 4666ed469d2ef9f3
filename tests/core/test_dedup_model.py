"""Hypothesis stateful test: the pure dedup index against a plain model.

The model keeps every key ever recorded with its id and its expiry clock: the time of
its submit, or a later one if the wall clock stepped back meanwhile (entries expire in
the order they came). A key is known while ``now - clock < window``. Restarts rebuild
the index from the durable entries only, as the queue does from its log.

Relay keys (``("peer:x", "relay:<n>")``, two peers) follow the same rule until the
peer's first low watermark; from then on they never expire by time, and a watermark
drops those below it (the watermark never goes down). A relay key below the watermark
is never recorded.

Bounds: the producers' keys (every key that is not a relay key) are at most
``max_entries``; each peer's relay keys are counted apart, at most ``max_peer_keys``,
except that the key at the peer's watermark is always taken (so at most one more).
One peer's keys never make another peer's, or a producer's, new key refused.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sidecar.dedup import DedupIndex, DedupKey, DedupLimits, check_dedup_id, relay_origin_id
from sidecar.errors import InvalidMessage, QueueFull

WINDOW = 10.0
MAX = 5
MAX_PEER = 3
PEER = "peer:x"
PEERS = [PEER, "peer:y"]
LIMITS = DedupLimits(window=WINDOW, max_entries=MAX, max_peer_keys=MAX_PEER)
KEYS = st.tuples(st.sampled_from(["alice", "bob"]), st.sampled_from(["a", "b", "c", "d"])) | (
    st.tuples(st.sampled_from(PEERS), st.integers(1, 6)).map(lambda pn: (pn[0], f"relay:{pn[1]}"))
)


class DedupModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index = DedupIndex(LIMITS)
        self.now = 1000.0
        self.next_id = 1
        self.known: dict[DedupKey, tuple[int, float, bool]] = {}  # key -> (id, clock, durable)
        self.at: dict[DedupKey, float] = {}  # key -> time of its submit
        self.latest = 0.0
        self.floors: dict[str, int] = {}  # each peer's low watermark

    def _pinned(self, key: DedupKey) -> bool:
        return key[0] in self.floors

    def _bucket(self, key: DedupKey) -> str | None:
        """Who a key counts against: its peer, or (None) the producers."""
        return key[0] if key[0] in PEERS else None

    def _held(self, bucket: str | None) -> int:
        return sum(1 for k in self._live() if self._bucket(k) == bucket)

    def _refused(self, key: DedupKey) -> bool:
        bucket = self._bucket(key)
        if bucket is None:
            return self._held(None) >= MAX
        oid = relay_origin_id(key)
        floor = self.floors.get(bucket)
        if floor is not None and oid is not None and oid <= floor:
            return False  # the key at the watermark: its successor frees the others
        return self._held(bucket) >= MAX_PEER

    def _live(self) -> dict[DedupKey, tuple[int, float, bool]]:
        # an expired key is gone for good, even if the clock steps back afterwards
        self.known = {
            k: v for k, v in self.known.items() if self._pinned(k) or self.now - v[1] < WINDOW
        }
        return self.known

    @rule(key=KEYS, durable=st.booleans(), fail=st.booleans())
    def submit(self, key: DedupKey, durable: bool, fail: bool) -> None:
        live = self._live()
        found = self.index.find(key, self.now)
        if key in live:
            assert found is not None
            assert found.message_id == live[key][0]
            return
        assert found is None
        refused = self._refused(key)
        try:
            self.index.reserve(key, self.now)
        except QueueFull:
            assert refused
            return
        assert not refused
        assert self.index.is_reserved(key)
        self._counts_match(reserved=key)
        if fail:
            self.index.unreserve(key)
            return
        self.index.record(key, self.next_id, self.now, durable=durable)
        oid = relay_origin_id(key)
        floor = self.floors.get(key[0])
        if floor is not None and oid is not None and oid < floor:
            assert self.index.find(key, self.now) is None  # passed by the watermark
            self.next_id += 1
            return
        if not self._pinned(key):
            self.latest = max(self.latest, self.now)
        self.known[key] = (self.next_id, self.latest, durable)
        self.at[key] = self.now
        self.next_id += 1

    @rule(seconds=st.sampled_from([0.5, 3.0, 9.9, 10.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(back=st.sampled_from([0.5, 2.0]))
    def clock_steps_back(self, back: float) -> None:
        self.now -= back

    @rule(peer=st.sampled_from(PEERS), watermark=st.integers(1, 7))
    def low_watermark(self, peer: str, watermark: int) -> None:
        self._live()
        self.index.advance(peer, watermark)
        floor = self.floors[peer] = max(self.floors.get(peer, 0), watermark)
        self.known = {
            k: v
            for k, v in self.known.items()
            if k[0] != peer or int(k[1].removeprefix("relay:")) >= floor
        }
        assert self.index.floor(peer) == floor

    @rule(key=KEYS)
    def make_durable(self, key: DedupKey) -> None:
        self.index.mark_durable(key)
        if key in self.known and key in self.index.entries():
            mid, at, _ = self.known[key]
            self.known[key] = (mid, at, True)

    @rule()
    def restart(self) -> None:
        """A crash: only durable entries come back, expired ones are dropped."""
        self._live()
        survivors = {k: v for k, v in self.index.entries().items() if v.durable}
        floors = self.index.floors()
        self.index = DedupIndex(LIMITS)
        for principal, watermark in floors.items():  # the log's watermark records
            self.index.advance(principal, watermark)
        for key, entry in sorted(survivors.items(), key=lambda kv: kv[1].at):
            self.index.record(key, entry.message_id, entry.at, durable=True)
        self.index.expire(self.now)
        durable = sorted((k for k, v in self.known.items() if v[2]), key=lambda k: self.at[k])
        self.known = {k: (self.known[k][0], self.at[k], True) for k in durable}
        timed = [self.at[k] for k in durable if not self._pinned(k)]
        self.latest = max(timed, default=0.0)

    def _counts_match(self, reserved: DedupKey | None = None) -> None:
        for bucket in (None, *PEERS):
            extra = int(reserved is not None and self._bucket(reserved) == bucket)
            assert self.index.count(bucket) == self._held(bucket) + extra, bucket

    @invariant()
    def never_more_than_the_limits(self) -> None:
        self.index.expire(self.now)
        assert self.index.count() <= MAX
        for peer in PEERS:
            assert self.index.count(peer) <= MAX_PEER + 1
        self._counts_match()
        assert len(self.index) == self.index.count() + sum(map(self.index.count, PEERS))
        assert {k: e.message_id for k, e in self.index.entries().items()} == {
            k: v[0] for k, v in self._live().items()
        }


TestDedupModel = DedupModel.TestCase
TestDedupModel.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("bad", ["", "x" * 129, 7, None, ["a"]])
def test_a_dedup_id_is_1_to_128_characters(bad: object) -> None:
    with pytest.raises(InvalidMessage, match="1-128 characters"):
        check_dedup_id(bad)


def test_a_key_at_the_count_limit_is_refused_until_one_expires() -> None:
    index = DedupIndex(DedupLimits(window=10.0, max_entries=2))
    index.record(("p", "a"), 1, 100.0, durable=True)
    index.record(("p", "b"), 2, 105.0, durable=True)
    with pytest.raises(QueueFull, match="dedup index holds 2"):
        index.reserve(("p", "c"), 108.0)
    assert index.find(("p", "a"), 108.0) is not None  # known keys are still answered
    index.reserve(("p", "c"), 110.0)  # "a" expired at 110
    assert index.find(("p", "a"), 110.0) is None
