"""A relay request the sender may build is one every receiver accepts: no more items
than the receiver's `max_batch`, no larger than its `max_frame_bytes` (docs/relay.md)."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest

from sidecar.daemon.config import ConfigError, parse_relay
from tests.relay.harness import Node, block, make_mesh, mesh_nodes, pop_all
from transport.client import QueueClient
from transport.limits import ServiceLimits

__all__ = ["mesh_nodes"]

MAX_BATCH = ServiceLimits().max_batch


def test_relay_batch_is_at_most_what_a_receiver_accepts() -> None:
    assert parse_relay({"batch": MAX_BATCH}).batch == MAX_BATCH
    with pytest.raises(ConfigError, match=f"at most {MAX_BATCH}"):
        parse_relay({"batch": MAX_BATCH + 1})


async def test_a_receiver_accepts_a_full_batch_of_the_largest_relay_batch(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    nodes = make_mesh(tmp_path, ["alice", "bob"], [("alice", "bob")])
    bob = nodes["bob"]
    bob.start()
    mesh_nodes.append(bob)
    batch = parse_relay({"batch": MAX_BATCH}).batch
    items = [{"origin_id": i, "mode": "async", "message": block(i)} for i in range(1, batch + 1)]
    async with QueueClient.connect(
        "127.0.0.1",
        bob.port,
        username="alice",
        client_keys=[str(nodes["alice"].root / "to_bob")],
        known_hosts=bob.root / "known_hosts",
    ) as link:
        reply = await link.call("relay", {"items": items, "low_watermark": 1})
    assert len(reply["results"]) == batch
    assert all("message_id" in r for r in reply["results"])


def _big_tx(n: int) -> dict[str, Any]:
    return {
        "kind": "transaction",
        "tx_hash": f"{n:064x}",
        "tx_data": base64.b64encode(bytes(400_000)).decode(),  # ~533 KB canonical
    }


async def test_a_batch_of_large_broadcasts_is_split_under_the_frame_limit(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    # 5 x 533 KB in one request (batch 64) is over bob's 2 MiB frame limit: refused
    # and sent again for ever before; now two requests
    fast = "[relay]\nreconnect_min = 0.2\nreconnect_max = 1\n"
    nodes = make_mesh(tmp_path, ["alice", "bob"], [("alice", "bob")], config={"alice": fast})
    for n in nodes.values():
        n.start()
        mesh_nodes.append(n)
    alice, bob = nodes["alice"], nodes["bob"]
    async with alice.connect() as c:
        for i in range(1, 6):
            await c.submit(_big_tx(i), "sync", broadcast=True)
    deadline = time.monotonic() + 20
    async with alice.connect() as c:
        while True:
            (view,) = (await c.call("peers"))["peers"]
            if view["backlog"] == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    got = await pop_all(bob)
    assert view["backlog"] == 0, view
    assert sorted(m["message"]["tx_hash"] for m in got) == [f"{i:064x}" for i in range(1, 6)]
    assert view["connects"] == 1, view  # never refused and reconnected
