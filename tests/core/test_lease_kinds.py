"""Leasing only some kinds: the pure state, the kinds filter from the wire, recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar import InvalidMessage, Kind, QppValidatorQueue, QueueMessage, UnknownKind
from sidecar.messages import QueueMessageWithProvenance, parse_kinds
from sidecar.state import QueueState
from tests.core.helpers import block, gossip, telemetry, tx, vote

BLOCKS = frozenset({Kind.BLOCK_IMPORT})


def _state_with(makers: list[tuple[int, QueueMessage]]) -> QueueState:
    state = QueueState()
    for mid, msg in makers:
        state.admit(msg.encoded_size)
        state.push(QueueMessageWithProvenance(msg, mid, 0.0, "t"))
    return state


def test_a_kinds_lease_takes_only_those_kinds_in_priority_then_id_order() -> None:
    state = _state_with(
        [(1, telemetry(1)), (2, block(2)), (3, vote(3)), (4, tx(4)), (5, block(5)), (6, gossip(6))]
    )
    got = []
    while (lease := state.lease(0.0, 10.0, kinds=BLOCKS)) is not None:
        got.append(lease.message_id)
    assert got == [2, 5]
    assert state.ready == 4
    assert state.ready_of(BLOCKS) == 0
    # the others wait for other consumers, in the usual order
    both = frozenset({Kind.TELEMETRY, Kind.TRANSACTION})
    assert state.ready_of(both) == 2
    first = state.take(both)
    assert first is not None
    assert first.message_id == 4
    rest = [state.take(), state.take(), state.take()]
    assert [i.message_id for i in rest if i is not None] == [3, 6, 1]
    assert state.take() is None


def test_a_released_or_expired_message_returns_to_its_kind_in_id_order() -> None:
    state = _state_with([(1, block(1)), (2, block(2)), (3, vote(3))])
    first = state.lease(0.0, 1.0, kinds=BLOCKS)
    second = state.lease(0.0, 5.0, kinds=BLOCKS)
    assert first is not None
    assert second is not None
    assert state.lease(0.0, 1.0, kinds=BLOCKS) is None
    state.release(second.lease_id)
    assert state.expire(2.0) == 1  # the first lease's deadline passed
    again = [state.lease(2.0, 1.0, kinds=BLOCKS), state.lease(2.0, 1.0, kinds=BLOCKS)]
    assert [(x.message_id, x.item.delivery_count) for x in again if x is not None] == [
        (1, 1),
        (2, 1),
    ]
    left = state.take()
    assert left is not None
    assert left.kind is Kind.VOTE


def test_depth_by_priority_counts_every_kind_of_a_priority() -> None:
    state = _state_with([(1, block(1)), (2, vote(2)), (3, telemetry(3))])
    assert state.depth_by_priority() == {"critical": 2, "high": 0, "normal": 0, "low": 1}


def test_kinds_from_the_wire() -> None:
    assert parse_kinds(["block_import", "vote", "vote"]) == {Kind.BLOCK_IMPORT, Kind.VOTE}
    for bad in ([], "block_import", None, {"kind": "vote"}):
        with pytest.raises(InvalidMessage, match="non-empty list"):
            parse_kinds(bad)
    with pytest.raises(UnknownKind, match=r"unknown message kind 'blocks' in kinds \(known: "):
        parse_kinds(["vote", "blocks"])
    with pytest.raises(UnknownKind, match="unknown message kind '7'"):
        parse_kinds([7])


def test_a_logged_message_knows_its_kind_from_its_prefix_without_parsing() -> None:
    for msg in (block(1), vote(2), tx(3), gossip(4), telemetry(5)):
        logged = QueueMessage.from_logged(msg.to_json_bytes())
        assert logged._kind is msg.kind  # read from the prefix, not left for a parse
    # bytes not in the canonical order still give the right kind (parsed when needed)
    odd = QueueMessage.from_logged(b'{"name":"cpu","kind":"telemetry","value":1}')
    assert odd._kind is None
    assert odd.kind is Kind.TELEMETRY


async def test_after_a_restart_a_kinds_lease_finds_recovered_messages(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("q", tmp_path) as q:
        for n, make in enumerate([gossip, block, telemetry, block, vote], start=1):
            await q.submit_sync(make(n), submitted_by="t")
    async with await QppValidatorQueue.open("q", tmp_path) as q:
        assert not await q.wait_available(0, kinds=[Kind.TRANSACTION])
        assert await q.wait_available(0, kinds=[Kind.TRANSACTION, Kind.VOTE])
        got = []
        while (lease := await q.lease(30, kinds=BLOCKS)) is not None:
            got.append((lease.item.kind, lease.item.message.get("block_number")))
            await q.ack(lease)
        assert got == [(Kind.BLOCK_IMPORT, 2), (Kind.BLOCK_IMPORT, 4)]
        assert q.depth() == {
            "total": 3,
            "ready": 3,
            "leased": 0,
            "critical": 1,
            "high": 0,
            "normal": 1,
            "low": 1,
        }
        assert await q.lease(30, kinds=BLOCKS) is None
