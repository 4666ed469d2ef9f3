"""A relay request the sender may build is one every receiver accepts: no more items
than the receiver's `max_batch`, no larger than its `max_frame_bytes` (docs/relay.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.daemon.config import ConfigError, parse_relay
from tests.relay.harness import Node, block, make_mesh, mesh_nodes
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
