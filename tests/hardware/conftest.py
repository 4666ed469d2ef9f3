from __future__ import annotations

import pytest

from hardware.config import HardwareConfig
from hardware.simulators.tls import ThrowawayPKI, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def config_for(**raw: object) -> HardwareConfig:
    """A config that sees only what the test sets up (no host udev, no /dev/hwrng)."""
    base: dict[str, object] = {
        "use_udev": False,
        "char_devices": [],
        "sample_bytes": 2048,
        "read_timeout": 1.0,
    }
    base.update(raw)
    return HardwareConfig.from_dict(base)


def kme_raw(
    pki: ThrowawayPKI, url: str, sae: str = "sae-alice", peer: str = "sae-bob"
) -> dict[str, object]:
    pair = pki.clients[sae]
    return {"url": url, "sae_id": sae, "slave_sae_id": peer, "cert": pair.cert,
            "key": pair.key, "ca": pki.ca, "timeout": 1.0, "simulated": True}  # fmt: skip
