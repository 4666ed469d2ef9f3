"""What every relay test checks at the end: each acknowledged sync broadcast is at
every peer exactly once, with its origin id, in origin order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

from tests.relay.harness import Node, block, pop_all


class Producer:
    """Sync broadcast submits of increasing block numbers; remembers the acked ones."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.acked: dict[int, int] = {}  # block number -> message id at the origin
        self._numbers = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self) -> None:
        async def one(client: Any) -> None:
            for _ in range(100_000):
                number = next(self._numbers)
                reply = await client.submit(block(number), "sync", broadcast=True)
                self.acked[number] = reply["message_id"]

        with contextlib.suppress(Exception):
            async with self.node.connect() as client:
                await asyncio.gather(*(one(client) for _ in range(4)))


async def wait_drained(origin: Node, peers: list[str], timeout: float = 120.0) -> None:
    """Until `origin` says none of `peers` lacks anything."""
    deadline = time.monotonic() + timeout
    async with origin.connect() as client:
        while True:
            views = {v["peer"]: v for v in (await client.call("peers"))["peers"]}
            if all(views[p]["backlog"] == 0 and views[p]["connected"] for p in peers):
                return
            assert time.monotonic() < deadline, f"relay from {origin.name} stuck: {views}"
            await asyncio.sleep(0.2)


async def check_received(peer: Node, origin: str, acked: dict[int, int]) -> int:
    """Pops everything at `peer`: every acked message once, origin ids intact, origin
    order kept; unacked ones (replies lost to a kill) at most once. How many arrived."""
    items = await pop_all(peer)
    by_number: dict[int, list[dict[str, Any]]] = {}
    for item in items:
        assert item["origin"] == origin
        assert item["submitted_by"] == f"peer:{origin}"
        by_number.setdefault(item["message"]["block_number"], []).append(item)
    duplicates = {n: len(v) for n, v in by_number.items() if len(v) > 1}
    assert not duplicates, f"{peer.name} stored some twice: {duplicates}"
    missing = sorted(set(acked) - set(by_number))
    assert not missing, f"{peer.name} lacks acked blocks {missing[:20]}"
    for number, mid in acked.items():
        assert by_number[number][0]["origin_id"] == mid
    # all are block_import (one priority): stored in origin id order
    in_local_order = sorted(items, key=lambda i: i["message_id"])
    origin_ids = [i["origin_id"] for i in in_local_order]
    assert origin_ids == sorted(origin_ids), f"{peer.name}: origin order broken"
    return len(items)
