"""The server's request path: requests that never wait run without a task; pipelined
sync submits (which do wait, on one shared batch future) each get their own reply."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any

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
