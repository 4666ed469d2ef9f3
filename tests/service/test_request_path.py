"""The server's request path: requests that never wait run without a task; sync
submits wait parked on their batch's future (no task either) and each gets its own
reply; the replies of one batch leave in one loop turn."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.service.conftest import Keys, block_import, gossip, start_service
from tests.service.rawchannel import RawChannel
from transport.service import TierInfo

SERVER_REQUEST_TASKS = {"_QueueSession._handle", "_resume"}


class _TaskCount:
    """A task factory that notes the coroutine of each task the loop creates."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        self.names.append(getattr(coro, "__qualname__", repr(coro)))
        return asyncio.Task(coro, loop=loop, **kwargs)


async def _replies(raw: RawChannel, n: int) -> list[dict[str, Any]]:
    """The next `n` replies (events pushed meanwhile, such as tier_changed, skipped)."""
    out = []
    while len(out) < n:
        reply = await asyncio.wait_for(raw.recv(), 30)
        assert reply is not None
        if "id" in reply:
            out.append(reply)
    return out


async def test_requests_that_never_wait_run_without_a_task(tmp_path: Path, keys: Keys) -> None:
    svc = await start_service(tmp_path, keys)
    raw = await RawChannel.open(svc.port, keys.everything)
    loop = asyncio.get_running_loop()
    count = _TaskCount()
    loop.set_task_factory(count)  # type: ignore[arg-type]
    try:
        n = 100
        for i in range(n):
            raw.send({"id": i, "method": "ping", "params": {}})
            raw.send(
                {
                    "id": n + i,
                    "method": "submit",
                    "params": {"message": gossip(i), "mode": "async"},
                }
            )
        replies = await _replies(raw, 2 * n)
    finally:
        loop.set_task_factory(None)
    assert all("result" in r for r in replies), replies[:3]
    assert sorted(r["id"] for r in replies) == list(range(2 * n))
    # a task per request was `_QueueSession._handle` (200 here before); the ones left
    # are the test client's own (wait_for around each recv)
    assert not [name for name in count.names if name in SERVER_REQUEST_TASKS], count.names[:5]
    raw.conn.abort()
    await svc.server.close()
    await svc.queue.close()


async def test_pipelined_sync_submits_share_batches_and_each_gets_its_reply(
    tmp_path: Path, keys: Keys
) -> None:
    svc = await start_service(tmp_path, keys)
    raw = await RawChannel.open(svc.port, keys.everything)
    n = 64
    for i in range(n):
        raw.send(
            {"id": i, "method": "submit", "params": {"message": block_import(i), "mode": "sync"}}
        )
    replies = await _replies(raw, n)
    ids = [r["result"]["message_id"] for r in replies]
    assert len(set(ids)) == n
    assert sorted(r["id"] for r in replies) == list(range(n))
    assert svc.queue.stats()["batches"] < n  # group commit over the wire
    raw.conn.abort()
    await svc.server.close()
    await svc.queue.close()


async def test_the_effective_tier_is_computed_again_only_after_a_tier_event(
    tmp_path: Path, keys: Keys
) -> None:
    asked: list[int] = []
    level = [2]

    def node_tier() -> TierInfo:
        asked.append(level[0])
        return TierInfo(level[0], ("test",))

    svc = await start_service(tmp_path, keys, tier_provider=node_tier)
    raw = await RawChannel.open(svc.port, keys.everything)
    for i in range(50):
        raw.send({"id": i, "method": "submit", "params": {"message": gossip(i)}})
    replies = await _replies(raw, 50)
    assert {r["result"]["mode"] for r in replies} == {"async"}  # tier 2: async stays
    before = len(asked)
    assert before <= 3  # once for the channel (plus its opening), not once per submit
    level[0] = 3
    svc.server.tier_changed()
    raw.send({"id": 99, "method": "submit", "params": {"message": gossip(99)}})
    (reply,) = await _replies(raw, 1)
    assert reply["result"]["mode"] == "sync"  # tier 3 forces sync: the new tier applies
    assert reply["result"]["upgraded"] is True
    raw.conn.abort()
    await svc.server.close()
    await svc.queue.close()


async def test_unpipelined_sync_submits_wait_without_a_task(tmp_path: Path, keys: Keys) -> None:
    """A sync submit waits for its batch's fsync parked on the batch's future: it is
    answered from the batch's completion, with no task of its own."""
    svc = await start_service(tmp_path, keys)
    first = await RawChannel.open(svc.port, keys.everything)
    channels = [first, *[await RawChannel.open_on(first.conn) for _ in range(3)]]
    loop = asyncio.get_running_loop()
    count = _TaskCount()
    loop.set_task_factory(count)  # type: ignore[arg-type]
    try:

        async def lane(lane_no: int, raw: RawChannel) -> list[dict[str, Any]]:
            out = []
            for i in range(10):  # one request in flight on each channel
                n = 100 * lane_no + i
                params = {"message": block_import(n), "mode": "sync"}
                raw.send({"id": n, "method": "submit", "params": params})
                out.extend(await _replies(raw, 1))
            return out

        lanes = await asyncio.gather(*(lane(k, raw) for k, raw in enumerate(channels)))
    finally:
        loop.set_task_factory(None)
    replies = [r for lane_replies in lanes for r in lane_replies]
    assert len(replies) == 40
    assert all(r["result"]["persisted"] for r in replies), replies[:3]
    assert not [name for name in count.names if name in SERVER_REQUEST_TASKS], count.names[:5]
    first.conn.abort()
    await svc.server.close()
    await svc.queue.close()


async def test_the_replies_of_one_batch_are_written_in_one_loop_turn(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = await start_service(tmp_path, keys)
    first = await RawChannel.open(svc.port, keys.everything)
    channels = [first, *[await RawChannel.open_on(first.conn) for _ in range(7)]]
    loop = asyncio.get_running_loop()
    turn = [0]

    def tick() -> None:  # runs once per loop iteration: the iteration's number
        turn[0] += 1
        loop.call_soon(tick)

    writes: list[int] = []  # the turn of each server-side channel write
    server_write = asyncssh.SSHServerChannel.write

    def write(chan: Any, data: Any, datatype: Any = None) -> None:
        writes.append(turn[0])
        server_write(chan, data, datatype)

    monkeypatch.setattr(asyncssh.SSHServerChannel, "write", write)
    before = svc.queue.stats()["batches"]
    loop.call_soon(tick)
    rounds = 5
    for r in range(rounds):
        for k, raw in enumerate(channels):  # one sync submit on each channel at once
            params = {"message": block_import(8 * r + k), "mode": "sync"}
            raw.send({"id": 8 * r + k, "method": "submit", "params": params})
        for raw in channels:
            (reply,) = await _replies(raw, 1)
            assert reply["result"]["persisted"] is True
    batches = svc.queue.stats()["batches"] - before
    monkeypatch.undo()
    # 40 replies on 8 channels: each batch's replies all leave in the same turn
    assert len(writes) >= 8 * rounds - batches  # coalesced per channel at most
    assert len(set(writes)) <= batches
    first.conn.abort()
    await svc.server.close()
    await svc.queue.close()


async def test_close_answers_a_sync_submit_parked_on_its_fsync(tmp_path: Path, keys: Keys) -> None:
    svc = await start_service(tmp_path, keys)
    raw = await RawChannel.open(svc.port, keys.everything)
    gate, entered = threading.Event(), threading.Event()

    def hold() -> None:  # runs in the log's worker between batches: holds the log
        entered.set()
        gate.wait(60)

    held = asyncio.ensure_future(svc.queue._live().run_exclusive(hold))
    try:
        for _ in range(1000):
            if entered.is_set():
                break
            await asyncio.sleep(0.01)
        params = {"message": block_import(1), "mode": "sync"}
        raw.send({"id": 1, "method": "submit", "params": params})
        for _ in range(1000):  # until the request is parked on its batch (bounded)
            if any(s._parked for s in svc.server._sessions):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the sync submit never reached the server")
        closing = asyncio.ensure_future(svc.server.close())
        await asyncio.sleep(0.05)
        assert not closing.done()  # it waits for the parked request's reply
    finally:
        gate.set()
    await held
    (reply,) = await _replies(raw, 1)
    assert reply["result"]["persisted"] is True
    await asyncio.wait_for(closing, 30)
    await svc.queue.close()
