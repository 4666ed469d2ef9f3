"""The real daemon keeps a peer's relay keys past a 1 s dedup window, through SIGKILL,
until the peer's low watermark passes them (docs/relay.md, "Guarantees")."""

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
