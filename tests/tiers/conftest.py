"""A real queue server with QKD settings, and a real ETSI 014 KME pair over mutual TLS."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import transport.ssh_algorithms  # noqa: F401  (registers ssh-falcon512)
from hardware.kme import KMEClient
from hardware.simulators.kme_server import KMESimulator, paired_kmes
from hardware.simulators.tls import ThrowawayPKI, make_pki
from tests.daemon.harness import spawn
from tests.service.conftest import Keys, keys, start_service
from transport.client import QueueClient
from transport.limits import ServiceLimits
from transport.protocol.sealing import RekeyPolicy
from transport.qkd import QKDSettings
from transport.server import QueueServer
from transport.tiers import DEFAULT_POLICY, TierInfo, TierPolicy

__all__ = ["keys", "spawn"]

MASTER, SLAVE = "sae-alice", "sae-bob"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def kme_pair(pki: ThrowawayPKI) -> Iterator[tuple[KMESimulator, KMESimulator]]:
    master, slave = paired_kmes(pki)
    master.start()
    slave.start()
    yield master, slave
    master.stop()
    slave.stop()


def kme_client(pki: ThrowawayPKI, sim: KMESimulator, sae: str) -> KMEClient:
    pair = pki.clients[sae]
    return KMEClient(sim.url, cert=pair.cert, key=pair.key, ca=pki.ca, timeout=10.0)


@dataclass
class NodeTier:
    """A node tier the test can move (the daemon's hardware monitor stands here)."""

    level: int
    reasons: tuple[str, ...] = ()

    def __call__(self) -> TierInfo:
        return TierInfo(self.level, self.reasons)


@dataclass
class TierService:
    server: QueueServer
    queue: Any
    known_hosts: Path
    keys: Keys
    node: NodeTier
    clients: list[KMEClient] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def connect(self, **kwargs: Any) -> Any:
        return QueueClient.connect(
            "127.0.0.1",
            self.port,
            username=None,
            client_keys=[self.keys.everything],
            known_hosts=self.known_hosts,
            **kwargs,
        )


async def start_tier_service(
    tmp_path: Path,
    keys: Keys,
    *,
    node: int = 4,
    qkd: QKDSettings | None = None,
    policy: TierPolicy = DEFAULT_POLICY,
    limits: ServiceLimits | None = None,
) -> TierService:
    node_tier = NodeTier(node)
    svc = await start_service(
        tmp_path, keys, limits, tier_provider=node_tier, policy=policy, qkd=qkd
    )
    return TierService(svc.server, svc.queue, svc.known_hosts, keys, node_tier)


async def stop_tier_service(svc: TierService) -> None:
    await svc.server.close()
    await svc.queue.close()
    for c in svc.clients:
        await c.aclose()


@contextlib.asynccontextmanager
async def qkd_service(
    tmp_path: Path,
    keys: Keys,
    pki: ThrowawayPKI,
    *,
    server: KMESimulator | None,
    client: KMESimulator,
    server_kme: Callable[[KMEClient], Any] = lambda kme: kme,
    server_rekey: RekeyPolicy | None = None,
    limits: ServiceLimits | None = None,
) -> AsyncIterator[tuple[TierService, QKDSettings]]:
    """A tier-4 node whose server fetches keys from ``server`` (through ``server_kme``;
    no KME at all when None), and client QKD settings on ``client``; stopped on exit."""
    kmes: list[KMEClient] = []
    qkd = None
    if server is not None:
        kmes.append(kme_client(pki, server, SLAVE))
        qkd = QKDSettings(
            kme=server_kme(kmes[0]), sae_id=SLAVE, rekey=server_rekey or RekeyPolicy()
        )
    svc = await start_tier_service(tmp_path, keys, qkd=qkd, limits=limits)
    kmes.append(kme_client(pki, client, MASTER))
    svc.clients += kmes
    try:
        yield svc, QKDSettings(kme=kmes[-1], sae_id=MASTER, peer_sae_id=SLAVE)
    finally:
        await stop_tier_service(svc)


@pytest.fixture
async def sealed_service(
    tmp_path: Path, keys: Keys, pki: ThrowawayPKI, kme_pair: tuple[KMESimulator, KMESimulator]
) -> AsyncIterator[tuple[TierService, Callable[..., QKDSettings]]]:
    """A tier-4 node whose server fetches keys from the slave KME; and a factory of
    client QKD settings on the master KME."""
    master, slave = kme_pair
    server_kme = kme_client(pki, slave, SLAVE)
    svc = await start_tier_service(
        tmp_path, keys, node=4, qkd=QKDSettings(kme=server_kme, sae_id=SLAVE)
    )
    svc.clients.append(server_kme)

    def client_qkd(
        rekey: RekeyPolicy | None = None, sim: KMESimulator | None = None
    ) -> QKDSettings:
        c = kme_client(pki, sim or master, MASTER)
        svc.clients.append(c)
        return QKDSettings(kme=c, sae_id=MASTER, peer_sae_id=SLAVE, rekey=rekey or RekeyPolicy())

    try:
        yield svc, client_qkd
    finally:
        await stop_tier_service(svc)


def transaction(value_usd: str, n: int = 1) -> dict[str, Any]:
    return {
        "kind": "transaction",
        "tx_hash": f"{n:064x}",
        "tx_data": "AAE=",
        "value_usd": value_usd,
    }
