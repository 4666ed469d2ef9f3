"""Operating the relay: a peer that is down, the backlog warning and the metrics, the
reconnect, and what the `peer` role may and may not do."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import asyncssh
import pytest

from sidecar.errors import Forbidden
from tests.relay.harness import KEY_ALG, Node, block, make_mesh, mesh_nodes, pop_all
from tests.relay.test_relay import wait_relayed
from transport.client import QueueClient
from transport.keys import known_hosts_line, public_line

__all__ = ["mesh_nodes"]

RELAY = "[relay]\nreconnect_min = 0.1\nreconnect_max = 0.5\nbacklog_warning = 2\n"


def metrics(node: Node) -> dict[str, float]:
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        lines = r.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("qssh_peer_")
    }


async def test_a_peer_that_is_down_accumulates_a_visible_backlog_then_drains(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    nodes = make_mesh(
        tmp_path, ["alice", "bob"], [("alice", "bob")], config={"alice": RELAY}, metrics=True
    )
    alice, bob = nodes["alice"], nodes["bob"]
    alice.start()
    mesh_nodes.extend([alice, bob])
    async with alice.connect() as client:
        for n in range(3):
            await client.submit(block(n), "sync", broadcast=True)
        deadline = time.monotonic() + 30
        while not alice.stderr_has("peer bob lacks 3 messages (relay.backlog_warning = 2)"):
            assert time.monotonic() < deadline, alice.daemon.errors if alice.daemon else None
            await asyncio.sleep(0.1)
        (view,) = (await client.call("peers"))["peers"]
    assert view["connected"] is False
    assert view["backlog"] == 3
    assert view["backlog_bytes"] > 0
    assert view["oldest_age"] >= 0
    assert view["last_error"]  # why: the connection is refused
    seen = metrics(alice)
    assert seen['qssh_peer_connected{peer="bob"}'] == 0
    assert seen['qssh_peer_backlog{peer="bob"}'] == 3
    assert seen['qssh_peer_lag_seconds{peer="bob"}'] >= 0

    bob.start()  # the link reconnects on its own and drains the backlog
    view = await wait_relayed(alice, "bob", 3)
    assert view["connected"] is True
    assert view["last_error"] is None
    assert len(await pop_all(bob)) == 3
    deadline = time.monotonic() + 30
    while metrics(alice).get('qssh_peer_relayed_total{peer="bob"}') != 3:
        assert time.monotonic() < deadline, metrics(alice)
        await asyncio.sleep(0.2)
    seen = metrics(alice)
    assert seen['qssh_peer_connected{peer="bob"}'] == 1
    assert seen['qssh_peer_backlog{peer="bob"}'] == 0


async def test_a_peer_key_may_only_relay_and_only_admins_see_peers(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    nodes = make_mesh(tmp_path, ["alice", "bob"], [("alice", "bob")])
    alice, bob = nodes["alice"], nodes["bob"]
    bob.start()
    mesh_nodes.append(bob)
    async with QueueClient.connect(
        "127.0.0.1",
        bob.port,
        username="alice",
        client_keys=[str(alice.root / "to_bob")],
        known_hosts=bob.root / "known_hosts",
    ) as as_peer:
        for method, params in (("submit", {"message": block(1)}), ("pop", {}), ("peers", {})):
            with pytest.raises(Forbidden):
                await as_peer.call(method, params)
        item = {"origin_id": 41, "mode": "sync", "message": block(41)}
        first = await as_peer.call("relay", {"items": [item]})
        again = await as_peer.call(
            "relay", {"items": [item, {"origin_id": 0, "message": block(2)}]}
        )
    assert first["results"][0]["duplicate"] is False
    assert again["results"][0] == {**first["results"][0], "duplicate": True}
    assert again["results"][1]["error"]["code"] == "bad_request"
    async with bob.connect() as operator:
        with pytest.raises(Forbidden, match="peer role"):
            await operator.call("relay", {"items": []})
    (got,) = await pop_all(bob)
    assert (got["submitted_by"], got["origin"], got["origin_id"]) == ("peer:alice", "alice", 41)

    nameless = asyncssh.generate_private_key(KEY_ALG)  # a peer line with no name
    alg, b64 = public_line(nameless).split()[:2]
    with (bob.root / "authorized_keys").open("a") as f:
        f.write(f'roles="peer" {alg} {b64}\n')
    async with QueueClient.connect(
        "127.0.0.1",
        bob.port,
        username="qssh",
        client_keys=[nameless],
        known_hosts=bob.root / "known_hosts",
    ) as unnamed:
        with pytest.raises(Forbidden, match="no name"):
            await unnamed.call("relay", {"items": [item]})


async def test_a_link_to_a_peer_with_another_host_key_is_refused_and_says_so(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    nodes = make_mesh(tmp_path, ["alice", "bob"], [("alice", "bob")], config={"alice": RELAY})
    alice, bob = nodes["alice"], nodes["bob"]
    impostor = asyncssh.generate_private_key(KEY_ALG)
    (bob.root / "host_key").write_bytes(impostor.export_private_key())  # not what alice pins
    (bob.root / "known_hosts").write_text(known_hosts_line("127.0.0.1", bob.port, impostor))
    for node in (bob, alice):
        node.start()
        mesh_nodes.append(node)
    async with alice.connect() as client:
        await client.submit(block(1), "sync", broadcast=True)
        deadline = time.monotonic() + 30
        while True:
            (view,) = (await client.call("peers"))["peers"]
            if view["last_error"]:
                break
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.1)
    assert view["connected"] is False
    assert view["backlog"] == 1
    assert "host key" in view["last_error"].lower()
    assert await pop_all(bob) == []


async def test_a_peer_that_refuses_every_retry_is_said_once_with_its_reason(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    """bob's queue is full, so every relay attempt connects and is refused. Each
    attempt wrote `peer bob: connected` and `peer bob: link down: peer bob refused 2
    relayed messages` (no reason: not queue_full, nor which message): two lines per
    retry for as long as bob stays full. Now the first attempt says it, with bob's
    reason; retries failing the same way say nothing; relaying again says connected."""
    nodes = make_mesh(
        tmp_path,
        ["alice", "bob"],
        [("alice", "bob")],
        config={
            "alice": "[relay]\nreconnect_min = 0.05\nreconnect_max = 0.2\n",
            "bob": "[limits]\nmax_queue_messages = 1\n",
        },
    )
    alice, bob = nodes["alice"], nodes["bob"]
    mesh_nodes += [bob, alice]
    bob.start()
    alice.start()
    async with alice.connect() as client:
        for n in range(3):
            await client.submit(block(n + 1), broadcast=True)
    assert bob.daemon is not None
    assert alice.daemon is not None
    for _ in range(300):  # bounded: 30 s for alice's 6th attempt
        if sum("accepted alice" in ln for ln in bob.daemon.lines) >= 6:
            break
        await asyncio.sleep(0.1)
    assert sum("accepted alice" in ln for ln in bob.daemon.lines) >= 6
    down = [ln for ln in alice.daemon.errors if ln.startswith("peer bob: link down")]
    connected = [ln for ln in alice.daemon.lines if ln.startswith("peer bob: connected")]
    assert len(down) == 1, down
    assert len(connected) == 1, connected
    assert "refused relayed message 2: queue_full: queue holds 1 messages" in down[0], down
    async with alice.connect() as client:
        (view,) = (await client.call("peers"))["peers"]
    assert "queue_full" in view["last_error"], view
    assert len(await pop_all(bob)) == 1  # room: the next attempt relays one
    alice.daemon.wait_line(r"^peer bob: connected, session tier 2 \(relaying again\)")
