"""Value escalation (SPEC §6.1) at every edge, and which submits are forced to sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar.errors import TierRequired
from tests.service.conftest import Keys, block_import, gossip
from tests.tiers.conftest import start_tier_service, stop_tier_service, transaction
from transport.client import ConnectFailed
from transport.tiers import DEFAULT_POLICY, TierPolicy, needs_sync

EDGES = [
    ("0", 1),
    ("99.99", 1),
    ("100", 2),
    ("9999.99", 2),
    ("10000", 3),
    ("999999.99", 3),
    ("1000000", 4),
    ("2000000", 4),
]


@pytest.mark.parametrize(("value", "tier"), EDGES)
def test_default_thresholds_at_their_edges(value: str, tier: int) -> None:
    assert DEFAULT_POLICY.required_tier(transaction(value)) == tier


def test_only_transactions_with_a_value_escalate() -> None:
    assert DEFAULT_POLICY.required_tier(gossip(1)) == 1
    no_value = {k: v for k, v in transaction("1").items() if k != "value_usd"}
    assert DEFAULT_POLICY.required_tier(no_value) == 1


def test_thresholds_are_configurable() -> None:
    policy = TierPolicy.from_values([10, 50, 500])
    assert [policy.required_tier(transaction(v)) for v in ("9.99", "10", "499", "500")] == [
        1,
        2,
        3,
        4,
    ]


@pytest.mark.parametrize("bounds", [[100, 10], [0, 1, 2], [1, 2], ["x", 1, 2]])
def test_bad_thresholds_are_refused(bounds: list[Any]) -> None:
    with pytest.raises(ValueError, match="bounds"):
        TierPolicy.from_values(bounds)


@pytest.mark.parametrize("kind", ["block_import", "vote", "transaction", "entropy_share"])
@pytest.mark.parametrize("tier", [1, 2, 3, 4])
def test_critical_kinds_are_sync_at_every_tier(kind: str, tier: int) -> None:
    assert needs_sync(kind, "async", tier) == ("sync", True)
    assert needs_sync(kind, "sync", tier) == ("sync", False)


def test_tier_3_and_up_force_sync_below_it_async_stays() -> None:
    assert needs_sync("gossip", "async", 2) == ("async", False)
    assert needs_sync("gossip", "async", 3) == ("sync", True)
    assert needs_sync("telemetry", "async", 4) == ("sync", True)


async def test_edges_over_the_wire_follow_the_effective_tier(tmp_path: Path, keys: Keys) -> None:
    svc = await start_tier_service(tmp_path, keys, node=1)
    try:
        async with svc.connect() as c:
            for node, ok, refused in ((1, "99.99", "100"), (2, "9999.99", "10000")):
                svc.node.level = node
                svc.server.tier_changed()  # the daemon announces every tier event
                assert (await c.submit(transaction(ok, node)))["persisted"] is True
                with pytest.raises(TierRequired, match=f"needs tier {node + 1}"):
                    await c.submit(transaction(refused, node))
            svc.node.level = 4  # node 4, but an unsealed session gives 3
            svc.server.tier_changed()  # the daemon announces every tier event
            assert (await c.submit(transaction("999999.99", 9)))["persisted"] is True
            with pytest.raises(TierRequired, match="needs tier 4"):
                await c.submit(transaction("1000000", 9))
            assert await c.depth() == 3
    finally:
        await stop_tier_service(svc)


async def test_a_critical_kind_sent_async_is_made_sync_at_tier_1(
    tmp_path: Path, keys: Keys
) -> None:
    svc = await start_tier_service(tmp_path, keys, node=1)
    try:
        async with svc.connect() as c:
            result = await c.submit(block_import(1), "async")
            assert (result["mode"], result["upgraded"], result["persisted"]) == (
                "sync",
                True,
                True,
            )
            plain = await c.submit(gossip(1), "async")
            assert (plain["mode"], plain["upgraded"]) == ("async", False)
    finally:
        await stop_tier_service(svc)


async def test_custom_thresholds_apply_on_the_wire(tmp_path: Path, keys: Keys) -> None:
    svc = await start_tier_service(
        tmp_path, keys, node=2, policy=TierPolicy.from_values([10, 20, 30])
    )
    try:
        async with svc.connect() as c:
            await c.submit(transaction("19.99"))
            with pytest.raises(TierRequired, match="value_usd=20 needs tier 3"):
                await c.submit(transaction("20", 2))
    finally:
        await stop_tier_service(svc)


async def test_a_host_key_outside_the_tier_set_caps_the_session(tmp_path: Path, keys: Keys) -> None:
    policy = TierPolicy.from_values(host_keys={2: ["ssh-falcon1024", "ssh-sphincssha2128fsimple"]})
    svc = await start_tier_service(tmp_path, keys, node=3, policy=policy)
    try:
        async with svc.connect() as c:
            tier = await c.tier()
            assert tier["session"]["tier"] == 1
            assert tier["session"]["host_key"] == "ssh-falcon512"
            assert "host key ssh-falcon512" in tier["session"]["reasons"][0]
            with pytest.raises(TierRequired, match="host key ssh-falcon512"):
                await c.submit(transaction("100"))
    finally:
        await stop_tier_service(svc)


async def test_a_chacha20_session_is_tier_1_whatever_the_node_gives(
    tmp_path: Path, keys: Keys
) -> None:
    svc = await start_tier_service(tmp_path, keys, node=1)  # listens with tier-1 ciphers
    try:
        chacha = {"encryption_algs": ["chacha20-poly1305@openssh.com"]}
        async with svc.connect(tier=1, ssh_options=chacha) as c:
            svc.node.level = 3
            svc.server.tier_changed()  # the daemon announces every tier event
            tier = await c.tier()
            assert (tier["tier"], tier["session"]["cipher"]) == (1, "chacha20-poly1305@openssh.com")
            assert "AES-256-GCM" in tier["session"]["reasons"][0]
            result = await c.submit(gossip(1), "async")
            assert result["upgraded"] is False  # effective tier 1: not forced to sync
        async with svc.connect() as c:  # a tier-2 client offers AES-256-GCM only
            tier = await c.tier()
            assert (tier["tier"], tier["session"]["cipher"]) == (3, "aes256-gcm@openssh.com")
    finally:
        await stop_tier_service(svc)


async def test_a_tier_2_server_refuses_a_client_offering_only_chacha20(
    tmp_path: Path, keys: Keys
) -> None:
    svc = await start_tier_service(tmp_path, keys, node=2)  # listens with AES-256-GCM only
    try:
        chacha = {"encryption_algs": ["chacha20-poly1305@openssh.com"]}
        with pytest.raises(ConnectFailed):
            await svc.connect(tier=1, ssh_options=chacha)
        assert svc.server._server_stats()["channels"] == 0
    finally:
        await stop_tier_service(svc)
