"""The link to a peer cut by a loopback TCP proxy that stalls, resets or blackholes
it for a while: the relay resumes, every acknowledged message arrives exactly once."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

from tests.relay.checks import Producer, check_received, wait_drained
from tests.relay.harness import Node, make_mesh, mesh_nodes
from tests.relay.proxy import Mode, Proxy
from tests.subprocesses import free_port

__all__ = ["mesh_nodes"]

ROUNDS = 12 if os.environ.get("QSSH_NIGHTLY") == "1" else 3
RELAY = "[relay]\nreconnect_min = 0.1\nreconnect_max = 1\nbatch = 16\nrequest_timeout = 1\n"


async def test_stalls_resets_and_blackholes_lose_and_duplicate_nothing(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    proxy_port = free_port()
    nodes = make_mesh(
        tmp_path,
        ["alice", "bob"],
        [("alice", "bob")],
        config={"alice": RELAY},
        ports={"bob": proxy_port},
    )
    alice, bob = nodes["alice"], nodes["bob"]
    proxy = Proxy(bob.port)
    await proxy.start(proxy_port)
    try:
        for node in (alice, bob):
            node.start()
            mesh_nodes.append(node)
        rng = random.Random(1516)
        producer = Producer(alice)
        producer.start()
        for n in range(ROUNDS):
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            fault = (Mode.STALL, "reset", Mode.BLACKHOLE)[n % 3]
            if fault == "reset":
                proxy.reset()
            else:
                proxy.set(fault)
                await asyncio.sleep(rng.uniform(1.0, 2.0))  # past the request timeout
                proxy.set(Mode.PASS)
        await producer.stop()
        assert len(producer.acked) > 10 * ROUNDS
        await wait_drained(alice, ["bob"])
        await check_received(bob, "alice", producer.acked)
        async with alice.connect() as client:
            (view,) = (await client.call("peers"))["peers"]
        assert view["connects"] >= 2  # the link did break and come back
    finally:
        await proxy.close()
