"""The real daemon keeps a peer's relay keys past a 1 s dedup window, through SIGKILL,
until the peer's low watermark passes them, each peer's within its own bound
(relay.max_peer_keys), apart from the local producers' (docs/relay.md, "Guarantees")."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sidecar.errors import InvalidMessage
from tests.relay.harness import Node, block, make_mesh, mesh_nodes, pop_all
from transport.client import QueueClient

__all__ = ["mesh_nodes"]

SHORT_WINDOW = "[durability]\ndedup_window = 1\n"
SMALL_PRODUCER_INDEX = "[durability]\ndedup_max_entries = 20\n"


def _item(origin_id: int) -> dict[str, Any]:
    return {"origin_id": origin_id, "mode": "sync", "message": block(origin_id)}


def _bob_running_with_a_short_window(tmp_path: Path, mesh_nodes: list[Node]) -> tuple[Node, Node]:
    nodes = make_mesh(tmp_path, ["alice", "bob"], [("alice", "bob")], config={"bob": SHORT_WINDOW})
    nodes["bob"].start()
    mesh_nodes.append(nodes["bob"])
    return nodes["alice"], nodes["bob"]


def _as_alice(alice: Node, bob: Node) -> Any:
    return QueueClient.connect(
        "127.0.0.1",
        bob.port,
        username="alice",
        client_keys=[str(alice.root / "to_bob")],
        known_hosts=bob.root / "known_hosts",
    )


async def test_a_resend_long_after_the_window_and_a_sigkill_is_stored_once(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    alice, bob = _bob_running_with_a_short_window(tmp_path, mesh_nodes)
    async with _as_alice(alice, bob) as link:
        for bad in (0, "41", 1.5):
            with pytest.raises(InvalidMessage, match="low_watermark"):
                await link.call("relay", {"items": [_item(41)], "low_watermark": bad})
        first = await link.call("relay", {"items": [_item(41)], "low_watermark": 41})
    # the reply "was lost"; bob is SIGKILLed and the link stays down past the window
    bob.kill()
    await asyncio.sleep(1.5)
    bob.start()
    async with _as_alice(alice, bob) as link:
        again = await link.call("relay", {"items": [_item(41)], "low_watermark": 41})
        assert again["results"] == [{**first["results"][0], "duplicate": True}]
        # the next batch's watermark frees key 41; an id below it is refused, not stored
        await link.call("relay", {"items": [_item(42)], "low_watermark": 42})
        stale = await link.call("relay", {"items": [_item(41)]})
        assert stale["results"][0]["error"]["code"] == "bad_request"
        assert "below the low watermark 42" in stale["results"][0]["error"]["message"]
    assert sorted(m["origin_id"] for m in await pop_all(bob)) == [41, 42]


async def test_a_batch_without_a_watermark_keeps_the_window(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    """An older sender sends no watermark: its keys expire with the window, as before."""
    alice, bob = _bob_running_with_a_short_window(tmp_path, mesh_nodes)
    async with _as_alice(alice, bob) as link:
        first = await link.call("relay", {"items": [_item(7)]})
        await asyncio.sleep(1.5)
        later = await link.call("relay", {"items": [_item(7)]})
    assert first["results"][0]["duplicate"] is False
    assert later["results"][0]["duplicate"] is False  # the documented old behaviour


def _as(sender: Node, bob: Node) -> Any:
    return QueueClient.connect(
        "127.0.0.1",
        bob.port,
        username=sender.name,
        client_keys=[str(sender.root / "to_bob")],
        known_hosts=bob.root / "known_hosts",
    )


def _codes(reply: dict[str, Any]) -> list[str]:
    return [r["error"]["code"] if "error" in r else "ok" for r in reply["results"]]


async def test_a_peer_held_behind_one_message_never_fills_the_receivers_own_dedup_index(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    """The reviewer's case: alice's watermark stays at 1 (message 1 held for the tier);
    bob pins every later key from alice, in alice's own count, not in the index of his
    producers' dedup_ids (dedup_max_entries = 20 here)."""
    nodes = make_mesh(
        tmp_path, ["alice", "bob"], [("alice", "bob")], config={"bob": SMALL_PRODUCER_INDEX}
    )
    alice, bob = nodes["alice"], nodes["bob"]
    bob.start()
    mesh_nodes.append(bob)
    async with _as(alice, bob) as link:
        for first in range(2, 42, 10):
            items = [_item(oid) for oid in range(first, first + 10)]
            reply = await link.call("relay", {"items": items, "low_watermark": 1})
            assert _codes(reply) == ["ok"] * 10, reply["results"]
    async with bob.connect() as op:
        mine = await op.call(
            "submit_batch",
            {
                "messages": [block(1000 + n) for n in range(20)],
                "mode": "sync",
                "dedup_ids": [f"x{n}" for n in range(20)],
            },
        )
    assert _codes(mine) == ["ok"] * 20, mine["results"]


async def test_a_peer_at_max_peer_keys_is_refused_alone_across_a_sigkill(
    tmp_path: Path, mesh_nodes: list[Node]
) -> None:
    config = "[durability]\ndedup_max_entries = 2\n[relay]\nmax_peer_keys = 3\n"
    nodes = make_mesh(
        tmp_path, ["alice", "carol", "bob"], [("alice", "bob"), ("carol", "bob")],
        config={"bob": config},
    )  # fmt: skip
    alice, carol, bob = nodes["alice"], nodes["carol"], nodes["bob"]
    bob.start()
    mesh_nodes.append(bob)
    async with _as(alice, bob) as link:
        full = await link.call(
            "relay", {"items": [_item(n) for n in (2, 3, 4, 5)], "low_watermark": 1}
        )
    assert _codes(full) == ["ok", "ok", "ok", "queue_full"]
    assert "peer alice holds 3 relay keys (relay.max_peer_keys = 3)" in str(full["results"][3])
    async with _as(carol, bob) as link:  # another peer keeps its own bound
        other = await link.call(
            "relay", {"items": [_item(n) for n in (2, 3, 4)], "low_watermark": 1}
        )
    assert _codes(other) == ["ok"] * 3
    async with bob.connect() as op:  # and so do bob's own producers
        mine = await op.call(
            "submit_batch", {"messages": [block(900), block(901)], "dedup_ids": ["x1", "x2"]}
        )
    assert _codes(mine) == ["ok", "ok"]
    bob.kill()  # the keys and their accounting come back from the log
    bob.start()
    async with _as(alice, bob) as link:
        again = await link.call("relay", {"items": [_item(n) for n in (4, 5)], "low_watermark": 1})
        assert _codes(again) == ["ok", "queue_full"]
        assert again["results"][0]["duplicate"] is True
        # alice's held message goes through at last (the key at the watermark is always
        # taken); her next watermark frees the keys below it
        held = await link.call("relay", {"items": [_item(1)], "low_watermark": 1})
        assert _codes(held) == ["ok"]
        after = await link.call("relay", {"items": [_item(5)], "low_watermark": 5})
        assert _codes(after) == ["ok"]
    stored = [(m.get("origin"), m.get("origin_id")) for m in await pop_all(bob)]
    assert sorted(stored, key=str) == sorted(
        [("alice", n) for n in range(1, 6)]
        + [("carol", n) for n in (2, 3, 4)]
        + [(None, None)] * 2,
        key=str,
    )
