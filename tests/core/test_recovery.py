"""Recovery rebuilds exactly the queue that was closed: hypothesis over random sequences
of submits (sync, async, deduplicated, broadcast), pops, leases acked, released or
left held, and compactions, on real files; then the log is reopened and the queue
compared with the one before the close, message by message and in delivery order."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import QppValidatorQueue, QueueMessageWithProvenance
from sidecar.state import message_cost
from tests.core.helpers import block, gossip, telemetry, tx, vote

_MAKERS = [block, vote, tx, gossip, telemetry]

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("sync"), st.integers(0, 4), st.booleans()),
        st.tuples(st.just("async"), st.integers(0, 4), st.booleans()),
        st.tuples(st.just("once"), st.integers(0, 4), st.integers(0, 3)),
        st.tuples(st.just("pop")),
        st.tuples(st.just("ack")),
        st.tuples(st.just("release")),
        st.tuples(st.just("hold")),
        st.tuples(st.just("compact")),
    ),
    max_size=30,
)


def _view(item: QueueMessageWithProvenance) -> tuple[Any, ...]:
    """What recovery must give back of a message (delivery counts of releases are not
    logged, and an async message is persisted by the close)."""
    return (
        item.message_id,
        item.message.to_json_bytes(),
        item.kind,
        item.priority,
        item.created_at,
        item.submitted_by,
        item.broadcast,
        item.upgraded,
        item.origin,
        item.origin_id,
    )


async def _run(directory: str, ops: list[tuple[Any, ...]]) -> None:
    q = await QppValidatorQueue.open("r", directory, peers=("p",))
    held = []
    dedup: dict[str, int] = {}
    n = 0
    for op in ops:
        n += 1
        if op[0] == "sync":
            await q.submit_sync(_MAKERS[op[1]](n), submitted_by=f"k{n % 3}", broadcast=op[2])
        elif op[0] == "async":
            await q.submit_async(_MAKERS[op[1]](n), submitted_by=f"k{n % 3}", broadcast=op[2])
        elif op[0] == "once":
            got = await q.submit_once(
                _MAKERS[op[1]](n), submitted_by="k0", dedup_id=f"d{op[2]}", mode="sync"
            )
            dedup.setdefault(f"d{op[2]}", got.message_id)
        elif op[0] == "pop":
            handle = await q.pop()
            if handle is not None:
                handle.consume()
        elif op[0] == "compact":
            await q.compact_wal()
        else:
            lease = await q.lease(60.0)
            if lease is None:
                continue
            if op[0] == "ack":
                await q.ack(lease)
            elif op[0] == "release":
                await q.release(lease)
            else:
                held.append(lease)
    state = q._state
    before = sorted(_view(i) for i in state.ready_items() + state.leased_items())
    last_id = max((v[0] for v in before), default=0)
    await q.close()

    q = await QppValidatorQueue.open("r", directory, peers=("p",))
    try:
        # each message accounted once at its cost, beside the consumed broadcast
        # messages kept for the peer (durable ones only: async ones relay from memory)
        kept = sum(message_cost(size) for size in q._kept_for_peers.values())
        assert q.stats()["bytes"] == sum(message_cost(len(v[1])) for v in before) + kept
        assert q.depth()["total"] == len(before)
        drained = []
        while (handle := await q.pop()) is not None:
            drained.append(_view(handle.consume()))
        # every message back, in delivery order: higher priority first, then lower id
        assert drained == sorted(before, key=lambda v: (-v[3], v[0]))
        for dedup_id, first in dedup.items():
            again = await q.submit_once(block(0), submitted_by="k0", dedup_id=dedup_id)
            assert again.duplicate
            assert again.message_id == first
        fresh = await q.submit_sync(block(0), submitted_by="k0")
        assert fresh > last_id
    finally:
        await q.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_the_recovered_queue_is_the_queue_that_was_closed(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory(prefix="qssh-recovery-") as directory:
        asyncio.run(_run(directory, ops))
