"""Broadcast messages between real sidecars over real SSH."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.relay.harness import Node, block, make_mesh, mesh_nodes, pop_all

__all__ = ["mesh_nodes"]


async def wait_relayed(node: Node, peer: str, total: int, timeout: float = 60.0) -> dict[str, Any]:
    """The `peers` view of `node` once `peer` has `total` messages and lacks none."""
    deadline = time.monotonic() + timeout
    async with node.connect() as client:
        while True:
            views = {v["peer"]: v for v in (await client.call("peers"))["peers"]}
            view = views[peer]
            if view["relayed_total"] >= total and view["backlog"] == 0:
                return view
            assert time.monotonic() < deadline, f"{node.name} -> {peer} stuck: {view}"
            await asyncio.sleep(0.1)


async def test_a_broadcast_reaches_each_peer_once_and_is_never_relayed_on(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    nodes = make_mesh(tmp_path, ["alice", "bob", "charlie"])
    for node in nodes.values():
        node.start()
        mesh_nodes.append(node)
    alice = nodes["alice"]
    async with alice.connect() as client:
        sent = await client.submit(block(1), "sync", broadcast=True)
        plain = await client.submit(block(2), "sync")
    for peer in ("bob", "charlie"):
        view = await wait_relayed(alice, peer, 1)
        assert view["connected"] is True
        assert view["session_tier"] == 2
    # bob and charlie relay what they got to nobody: their links stay idle
    for name in ("bob", "charlie"):
        async with nodes[name].connect() as client:
            views = (await client.call("peers"))["peers"]
        assert all(v["relayed_total"] == 0 and v["backlog"] == 0 for v in views), views
        (got,) = await pop_all(nodes[name])
        assert got["message"] == block(1)
        assert got["submitted_by"] == "peer:alice"
        assert (got["origin"], got["origin_id"]) == ("alice", sent["message_id"])
        assert got["broadcast"] is False
        assert (got["mode"], got["persisted"]) == ("sync", True)  # relayed as a sync submit
    # local consumption on alice is independent of the relay
    assert [i["message_id"] for i in await pop_all(alice)] == [
        sent["message_id"],
        plain["message_id"],
    ]
