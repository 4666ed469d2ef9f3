"""SIGKILL of the sender, of the receiver, and of both, in the middle of relaying.

Each cycle runs a producer of sync broadcast messages on alice, kills one end (or
both) after a random moment, and restarts it. At the end alice's links drain and each
peer holds every acknowledged message exactly once, with its origin id, in order.
The peers' dedup window is tiny (0.2 s, shorter than a restart): a resend after a lost
reply is recognised by the relay keys the sender's low watermark keeps, not by the window.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

from tests.relay.checks import Producer, check_received, wait_drained
from tests.relay.harness import Node, make_mesh, mesh_nodes

__all__ = ["mesh_nodes"]

CYCLES = 30 if os.environ.get("QSSH_NIGHTLY") == "1" else 3
WHO = ("sender", "receiver", "both")
FAST_RELAY = "[relay]\nreconnect_min = 0.1\nreconnect_max = 1\nbatch = 16\n"
TINY_WINDOW = "[durability]\ndedup_window = 0.2\n"


async def test_kills_mid_relay_lose_and_duplicate_nothing(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    nodes = make_mesh(
        tmp_path,
        ["alice", "bob", "charlie"],
        [("alice", "bob"), ("alice", "charlie")],
        config={"alice": FAST_RELAY, "bob": TINY_WINDOW, "charlie": TINY_WINDOW},
    )
    alice, bob, charlie = nodes["alice"], nodes["bob"], nodes["charlie"]
    for node in nodes.values():
        node.start()
        mesh_nodes.append(node)
    rng = random.Random(1515)
    producer = Producer(alice)
    for cycle in range(CYCLES):
        producer.start()
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        who = WHO[cycle % 3]
        victims = {"sender": [alice], "receiver": [bob], "both": [alice, bob]}[who]
        for node in victims:
            node.kill()
        await producer.stop()
        for node in victims:
            node.start()
    assert len(producer.acked) > 10 * CYCLES  # the kills did land mid-stream
    await wait_drained(alice, ["bob", "charlie"])
    for peer in (bob, charlie):
        await check_received(peer, "alice", producer.acked)
