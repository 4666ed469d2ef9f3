"""A recovered message stays its parsed submit record until first used (recovery then
builds no object per message): to every reader it must be the message a submit made.

Twin queues get the same submits under the same clocks: S keeps them as submitted, R
is closed and reopened, so its messages are records not built yet. Then the same
random readers run on both: pops, leases by kinds, acks, releases, the relay link to
a peer, compactions (also with pops running between the compaction's steps, while its
snapshot is pinned), reopens. Every answer, the depth and the accounted bytes must be equal, and a
compaction of either writes the same records."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import Kind, Priority, QppValidatorQueue, QueueMessage, QueueMessageWithProvenance
from sidecar.wal import FILE_HEADER_SIZE, Replayer, decode_frame_at
from tests.core.helpers import ManualClock, block, gossip, tx, vote


def telemetry(n: int) -> QueueMessage:
    # not ASCII: its canonical text has fewer characters than bytes
    return QueueMessage.create("telemetry", name="températur", value=n, labels={"hôte": "ü"})


_MAKERS = [block, vote, tx, gossip, telemetry]
_KINDS = [Kind.BLOCK_IMPORT, Kind.VOTE, Kind.TRANSACTION, Kind.GOSSIP, Kind.TELEMETRY]

_SUBMITS = st.lists(
    st.tuples(
        st.integers(0, 4),  # kind
        st.sampled_from(["plain", "broadcast", "once"]),
        st.integers(0, 2),  # submitted_by
    ),
    min_size=1,
    max_size=25,
)
_READERS = st.lists(
    st.one_of(
        st.tuples(st.just("pop")),
        st.tuples(st.just("lease"), st.frozensets(st.integers(0, 4), min_size=1) | st.none()),
        st.tuples(st.just("ack")),
        st.tuples(st.just("release")),
        st.tuples(st.just("compact")),
        st.tuples(st.just("compact_while_popping"), st.integers(1, 4)),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("relay"), st.integers(1, 3), st.booleans()),
    ),
    max_size=25,
)
EXAMPLES = 1000 if os.environ.get("QSSH_NIGHTLY") == "1" else 100


def _view(item: QueueMessageWithProvenance | None) -> tuple[Any, ...] | None:
    if item is None:
        return None
    return (
        item.message_id,
        item.message.to_json_bytes(),
        item.message.to_json(),
        item.kind,
        item.priority,
        item.created_at,
        item.submitted_by,
        item.persisted,
        item.broadcast,
        item.mode,
        item.upgraded,
        item.delivery_count,
        item.origin,
        item.origin_id,
        item.to_json(),
    )


def _records(path: Path) -> list[Any]:
    data = path.read_bytes()
    offset, out = FILE_HEADER_SIZE, []
    while offset < len(data):
        frame = decode_frame_at(data, offset)
        assert frame is not None
        offset, records = frame
        out += records
    return out


class Twin:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.clock = ManualClock()
        self.wall = ManualClock(1_700_000_000.0)
        self.q: QppValidatorQueue | None = None
        self.held: list[Any] = []

    async def open(self) -> QppValidatorQueue:
        self.q = await QppValidatorQueue.open(
            "t", self.directory, peers=("p",), clock=self.clock, wall_clock=self.wall
        )
        self.q.compaction_chunk = 2  # many steps: pops run between them
        self.held = []
        return self.q

    async def reopen(self) -> QppValidatorQueue:
        assert self.q is not None
        await self.q.close()
        return await self.open()

    async def submit(self, n: int, kind: int, how: str, by: int) -> Any:
        assert self.q is not None
        self.wall.advance(0.25)
        msg = _MAKERS[kind](n)
        if how == "once":
            got = await self.q.submit_once(
                msg, submitted_by=f"k{by}", dedup_id=f"d{n}", mode="sync"
            )
            return got.message_id
        return await self.q.submit_sync(msg, submitted_by=f"k{by}", broadcast=how == "broadcast")

    async def read(self, op: tuple[Any, ...]) -> Any:
        q = self.q
        assert q is not None
        if op[0] == "pop":
            handle = await q.pop()
            return None if handle is None else _view(handle.consume())
        if op[0] == "lease":
            kinds = None if op[1] is None else [_KINDS[k] for k in sorted(op[1])]
            lease = await q.lease(30.0, kinds=kinds)
            if lease is None:
                return None
            self.held.append(lease)
            return _view(lease.item)
        if op[0] in ("ack", "release"):
            if not self.held:
                return None
            lease = self.held.pop(0)
            await (q.ack(lease) if op[0] == "ack" else q.release(lease))
            return lease.message_id
        if op[0] == "compact":
            await q.compact_wal()
            # the records kept (id reservations differ: R was reopened once more)
            return [r for r in _records(Path(q.path)) if r[0] not in ("K", "R")]
        if op[0] == "relay":  # the peer's link: broadcast messages it lacks, then done
            items = q.relay_take("p", op[1])
            if op[2]:
                await q.relay_done("p", items)
            else:
                q.relay_give_back("p", items)
            return [_view(i) for i in items]
        if op[0] == "compact_while_popping":

            async def pops() -> list[Any]:
                got = []
                for _ in range(op[1]):
                    await asyncio.sleep(0)
                    handle = await q.pop()
                    got.append(None if handle is None else _view(handle.consume()))
                return got

            _, popped = await asyncio.gather(q.compact_wal(), pops())
            return popped
        self.q = await self.reopen()
        return "reopened"

    def observed(self) -> tuple[Any, ...]:
        q = self.q
        assert q is not None
        stats = q.stats()
        return (q.depth(), stats["bytes"], stats["durable_messages"], stats["dedup_ids"])


async def _run(base: Path, submits: list[tuple[int, str, int]], readers: list[Any]) -> None:
    s, r = Twin(base / "s"), Twin(base / "r")
    for twin in (s, r):
        await twin.open()
        for n, (kind, how, by) in enumerate(submits, 1):
            await twin.submit(n, kind, how, by)
    await r.reopen()
    assert r.q is not None
    # R's plain messages are still their records, but the first of each kind (built
    # as it entered its heap) and those not ASCII (telemetry here)
    built = sum(not isinstance(v, list) for v in r.q._durable_live._base.values())
    plain = [kind for kind, how, _ in submits if how == "plain" and kind != 4]
    assert built <= len(submits) - len(plain) + len(set(plain))
    try:
        assert s.observed() == r.observed()
        for op in readers:
            assert await s.read(op) == await r.read(op), op
            assert s.observed() == r.observed(), op
        drained: list[list[Any]] = []
        for twin in (s, r):
            q = twin.q
            assert q is not None
            for lease in twin.held:
                await q.release(lease)
            drained.append([_view(h.consume()) for h in [await q.pop() for _ in range(30)] if h])
        assert drained[0] == drained[1]
    finally:
        for twin in (s, r):
            if twin.q is not None:
                await twin.q.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(submits=_SUBMITS, readers=_READERS)
def test_recovered_messages_read_as_the_submitted_ones(
    submits: list[tuple[int, str, int]], readers: list[Any]
) -> None:
    with tempfile.TemporaryDirectory(prefix="qssh-lazy-") as directory:
        asyncio.run(_run(Path(directory), submits, readers))


def test_a_recovered_message_is_built_once_on_first_use_at_exact_size(tmp_path: Path) -> None:
    async def main() -> None:
        q = await QppValidatorQueue.open("t", tmp_path)
        for n in range(1, 6):
            await q.submit_sync(gossip(n), submitted_by="k")
        await q.close()
        q = await QppValidatorQueue.open("t", tmp_path)
        try:
            live = q._durable_live
            # none built but the first, in its kind's heap
            assert [isinstance(v, list) for v in live._base.values()] == [False] + [True] * 4
            lease = await q.lease(30.0)
            assert lease is not None
            assert isinstance(live._base[lease.message_id + 1], QueueMessageWithProvenance)
            # the heap's next message was built when it entered the heap, and the
            # index of logged messages holds that same object in place of its record
            assert live.get(lease.message_id) is lease.item
            assert live._base[lease.message_id] is lease.item
            encoded = lease.item.message.to_json_bytes()
            assert type(encoded) is bytes
            assert sys.getsizeof(encoded) == sys.getsizeof(b"") + len(encoded)  # exact size
            await q.release(lease)
            again = await q.lease(30.0)
            assert again is not None
            assert again.item is lease.item
            assert again.item.delivery_count == 1
            # a compaction writes the built message (its delivery count) and the records
            # of the others, unchanged
            await q.compact_wal()
            written = {r[1]: r for r in _records(Path(q.path)) if r[0] == "S"}
            assert written[lease.message_id][9] == 1
            assert [written[m][10] for m in sorted(written)] == [
                gossip(n).to_json_bytes().decode() for n in range(1, 6)
            ]
        finally:
            await q.close()

    asyncio.run(main())


def test_replay_keeps_plain_records_and_builds_the_others() -> None:
    def message(mid: int) -> QueueMessage:
        return telemetry(mid) if mid == 4 else gossip(mid)

    def submit(mid: int, broadcast: bool, extras: dict[str, Any] | None = None) -> list[Any]:
        rec = ["S", mid, int(message(mid).priority), 1.5, "k", "sync", True, broadcast, False, 0]
        rec.append(message(mid).to_json_bytes().decode())
        if extras is not None:
            rec.append(extras)
        return orjson.loads(orjson.dumps(rec))  # type: ignore[no-any-return]

    replayer = Replayer()
    replayer.feed(
        [
            submit(1, False),
            submit(2, True),
            submit(3, False, {"dedup": ["k", "x"]}),
            submit(4, False),
        ]
    )
    out = replayer.out
    assert isinstance(out.live[1], list)  # plain: kept as parsed
    assert isinstance(out.live[2], QueueMessageWithProvenance)  # broadcast
    assert out.broadcast[2] is out.live[2]
    assert isinstance(out.live[3], QueueMessageWithProvenance)  # extras
    assert out.dedup == {("k", "x"): (3, 1.5)}
    assert isinstance(out.live[4], QueueMessageWithProvenance)  # not ASCII
    assert out.size() == sum(len(message(n).to_json_bytes()) for n in (1, 2, 3, 4))
    assert [_view(i) for i in out.items()] == [
        _view(
            QueueMessageWithProvenance(
                message(n), n, 1.5, "k", persisted=True, broadcast=n == 2, delivery_count=0
            )
        )
        for n in (1, 2, 3, 4)
    ]


def test_replay_gives_each_kind_in_delivery_order_whatever_the_log_order() -> None:
    def submit(mid: int, message: QueueMessage, priority: int) -> list[Any]:
        rec = ["S", mid, priority, 1.5, "k", "sync", True, False, False, 0]
        return orjson.loads(orjson.dumps([*rec, message.to_json_bytes().decode()]))  # type: ignore[no-any-return]

    low = int(gossip(0).priority)
    in_log_order = [
        submit(5, gossip(5), low),
        submit(2, block(2), int(block(2).priority)),
        submit(3, gossip(3), low),
        submit(9, gossip(9), int(max(Priority))),  # not its kind's priority (an older table)
        submit(1, block(1), int(block(1).priority)),
    ]
    replayer = Replayer()
    replayer.feed(in_log_order)
    assert not replayer.out.ids_rising
    assert not replayer.out.kind_priorities
    assert replayer.out.runs() == {Kind.GOSSIP: [9, 3, 5], Kind.BLOCK_IMPORT: [1, 2]}
    rising = Replayer()
    rising.feed([submit(1, gossip(1), low), submit(4, gossip(4), low)])
    assert rising.out.ids_rising
    assert rising.out.kind_priorities
    assert rising.out.runs() == {Kind.GOSSIP: [1, 4]}
    # ids not rising (async messages a close logged after later ones), a consumed one
    unsorted = Replayer()
    unsorted.feed(
        [
            submit(7, gossip(7), low),
            submit(6, block(6), int(block(6).priority)),
            submit(2, gossip(2), low),
            ["C", 7],
            submit(4, gossip(4), low),
            submit(1, block(1), int(block(1).priority)),
        ]
    )
    assert not unsorted.out.ids_rising
    assert unsorted.out.kind_priorities
    assert unsorted.out.runs() == {Kind.GOSSIP: [2, 4], Kind.BLOCK_IMPORT: [1, 6]}
