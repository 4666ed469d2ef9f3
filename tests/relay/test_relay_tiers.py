"""Tier-gated relay: a $2M transaction needs tier 4. From a tier-4 alice it flows over
a QKD-sealed link to tier-4 charlie and stays held, with its reason, for tier-3 bob."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from hardware.simulators.kme_server import KMESimulator
from hardware.simulators.serial_qrng import SerialQRNGSimulator
from hardware.simulators.tls import ThrowawayPKI
from tests.relay.harness import Node, make_mesh, mesh_nodes, pop_all
from tests.tiers.conftest import MASTER, SLAVE, kme_client, kme_pair, pki, transaction
from tests.tiers.test_daemon_tiers import kme_section
from transport.qkd import QKDSettings

__all__ = ["kme_pair", "mesh_nodes", "pki"]

NO_DEVICES = "[hardware]\nuse_udev = false\nchar_devices = []\n"
NO_PUBLISHING = "[tiers.entropy]\ninterval = 0\n"


def sealed_link(pki: ThrowawayPKI, master: KMESimulator) -> str:
    """alice's [peers.qkd] for charlie: alice is the master SAE of the KME pair."""
    alice = pki.clients[MASTER]
    return (
        f'[peers.qkd]\nkme = "{master.url}"\ncertificate = "{alice.cert}"\n'
        f'key = "{alice.key}"\nca = "{pki.ca}"\nsae_id = "{MASTER}"\npeer_sae_id = "{SLAVE}"\n'
    )


async def peers_view(node: Node) -> dict[str, dict[str, Any]]:
    async with node.connect() as client:
        return {v["peer"]: v for v in (await client.call("peers"))["peers"]}


async def test_a_2m_transaction_is_held_at_a_tier_3_peer_and_flows_to_a_tier_4_peer(
    tmp_path: Path,
    mesh_nodes: list[Node],
    pki: ThrowawayPKI,
    kme_pair: tuple[KMESimulator, KMESimulator],
) -> None:
    master, slave = kme_pair
    with SerialQRNGSimulator("good") as qrng:
        bob_hw = (
            "[hardware]\nuse_udev = false\nchar_devices = []\nsample_bytes = 2048\n"
            f'serial_ports = [{{ path = "{qrng.path}", kind = "quantum_local", '
            "simulated = true }]\n"
        )
        nodes = make_mesh(
            tmp_path,
            ["alice", "bob", "charlie"],
            [("alice", "bob"), ("alice", "charlie")],
            config={
                "alice": NO_DEVICES + kme_section(pki, slave),
                "bob": bob_hw + NO_PUBLISHING,
                "charlie": NO_DEVICES + kme_section(pki, slave),
            },
            link_config={("alice", "charlie"): sealed_link(pki, master)},
        )
        for node in nodes.values():
            node.start()
            mesh_nodes.append(node)
        alice, bob, charlie = nodes["alice"], nodes["bob"], nodes["charlie"]
        client_kme = kme_client(pki, master, MASTER)
        qkd = QKDSettings(kme=client_kme, sae_id=MASTER, peer_sae_id=SLAVE)
        try:
            async with alice.connect(qkd=qkd, require_qkd=True) as client:
                big = await client.submit(transaction("2000000", 1), broadcast=True)
                small = await client.submit(transaction("5", 2), broadcast=True)
        finally:
            await client_kme.aclose()

        deadline = time.monotonic() + 60
        while True:
            views = await peers_view(alice)
            if views["charlie"]["relayed_total"] == 2 and views["bob"]["relayed_total"] == 1:
                break
            assert time.monotonic() < deadline, views
            await asyncio.sleep(0.2)
        assert views["charlie"]["session_tier"] == 4
        assert views["bob"]["session_tier"] == 3
        assert views["bob"]["backlog"] == 1
        (held,) = views["bob"]["held"]
        assert held["message_id"] == big["message_id"]
        assert "needs tier 4" in held["reason"]
        assert "tier 3" in held["reason"]

        def origin_ids(items: list[dict[str, Any]]) -> list[int]:
            return sorted(i["origin_id"] for i in items if i["message"]["kind"] == "transaction")

        assert origin_ids(await pop_all(charlie)) == [big["message_id"], small["message_id"]]
        assert origin_ids(await pop_all(bob)) == [small["message_id"]]
