from __future__ import annotations

import re

import pytest

from hardware.config import HardwareConfig, HardwareConfigError
from hardware.reports import DeviceReport, HealthVerdict, KMEStatusReport, SourceKind
from hardware.tier import Tier, decide


def device(kind: SourceKind, healthy: bool = True, simulated: bool = False) -> DeviceReport:
    return DeviceReport(
        kind=kind,
        model="m",
        path="/dev/x",
        readable=True,
        health=HealthVerdict.PASS if healthy else HealthVerdict.FAIL,
        simulated=simulated,
    )


def kme(keys: int) -> KMEStatusReport:
    return KMEStatusReport(url="https://kme", reachable=True, stored_key_count=keys)


def test_nothing_found_is_hardened_pq_with_reasons() -> None:
    d = decide([], None)
    assert d.tier is Tier.HARDENED_PQ
    assert d.reasons == (
        "tier 4 unavailable: no KME configured",
        "tier 3 unavailable: no local quantum RNG found",
    )


def test_classical_trng_does_not_give_tier_3() -> None:
    assert decide([device(SourceKind.TRNG)], None).tier is Tier.HARDENED_PQ


def test_healthy_quantum_gives_tier_3_and_kme_with_keys_gives_4() -> None:
    assert decide([device(SourceKind.QUANTUM_LOCAL)], None).tier is Tier.ENTROPY_ENHANCED
    assert decide([], kme(5)).tier is Tier.QUANTUM_SECURED


def test_kme_without_keys_is_not_tier_4() -> None:
    d = decide([], kme(0))
    assert d.tier is Tier.HARDENED_PQ
    assert "tier 4 unavailable: KME https://kme has no stored keys" in d.reasons


def test_ceiling_one_is_basic_pq() -> None:
    d = decide([device(SourceKind.QUANTUM_LOCAL)], kme(5), ceiling=Tier.BASIC_PQ)
    assert d.tier is Tier.BASIC_PQ
    assert any("ceiling 1" in r for r in d.reasons)


def test_simulated_flag_follows_the_hardware_used() -> None:
    assert decide([device(SourceKind.QUANTUM_LOCAL, simulated=True)], None).simulated
    assert not decide(
        [device(SourceKind.QUANTUM_LOCAL, healthy=False, simulated=True)], None
    ).simulated


TIER_SPELLINGS = [
    (1, Tier.BASIC_PQ),
    ("HardenedPQ", Tier.HARDENED_PQ),
    ("quantum_secured", Tier.QUANTUM_SECURED),
    ("3", Tier.ENTROPY_ENHANCED),
]


@pytest.mark.parametrize(("raw", "tier"), TIER_SPELLINGS)
def test_tier_parse(raw: object, tier: Tier) -> None:
    assert Tier.parse(raw) is tier


def test_config_from_dict() -> None:
    cfg = HardwareConfig.from_dict(
        {
            "serial_ports": ["/dev/ttyACM0", {"path": "/dev/pts/9", "handshake": "onerng"}],
            "floor": 2,
            "ceiling": "EntropyEnhanced",
            "health": {"alpha_log2": -20, "entropy_bits": 8},
            "kme": {
                "url": "https://kme:8443/",
                "sae_id": "a",
                "slave_sae_id": "b",
                "cert": "c.pem",
                "key": "c.key",
                "ca": "ca.pem",
            },
        }
    )
    assert [p.path for p in cfg.serial_ports] == ["/dev/ttyACM0", "/dev/pts/9"]
    assert cfg.serial_ports[1].handshake == "onerng"
    assert (cfg.floor, cfg.ceiling) == (Tier.HARDENED_PQ, Tier.ENTROPY_ENHANCED)
    assert (cfg.health.rct_cutoff, cfg.health.apt_cutoff) == (4, 13)
    assert cfg.kme is not None
    assert cfg.kme.url == "https://kme:8443"


@pytest.mark.parametrize(
    "raw",
    [{"bogus": 1}, {"floor": 4, "ceiling": 2}, {"floor": 7}, {"health": {"entropy_bits": 9}},
     {"serial_ports": [{"path": "/x", "handshake": "magic"}]}, {"kme": {"url": "x"}},
     {"sample_bytes": 0}],
)  # fmt: skip
def test_bad_config_is_a_clear_error(raw: dict[str, object]) -> None:
    with pytest.raises(HardwareConfigError, match=r"\[hardware\]|handshake"):
        HardwareConfig.from_dict(raw)


_KME = {"url": "https://kme:8443", "sae_id": "a", "slave_sae_id": "b", "cert": "c",
        "key": "k", "ca": "ca"}  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "message"),
    [({"health": {"windw": 256}}, "health: unknown keys ['windw']"),
     ({"serial_ports": [{"path": "/dev/ttyACM0", "baud": 9600}]},
      "serial port /dev/ttyACM0: unknown keys ['baud']"),
     ({"remote_endpoints": [{"name": "n", "url": "https://q", "rate": 1}]},
      "remote endpoint: unknown keys ['rate']"),
     ({"kme": {**_KME, "min_keysize": 512}}, "kme: unknown keys ['min_keysize']")],
)  # fmt: skip
def test_an_unknown_key_in_a_sub_table_is_an_error(raw: dict[str, object], message: str) -> None:
    """docs/operations.md: unknown keys anywhere are errors, so a typo (a `min_keysize`
    that would leave tier 4 on 256-bit keys) never falls back to a default."""
    with pytest.raises(HardwareConfigError, match=re.escape(message)):
        HardwareConfig.from_dict(raw)


def test_a_failed_quantum_device_beside_a_healthy_one_is_not_used_with_a_reason() -> None:
    bad = device(SourceKind.QUANTUM_LOCAL, healthy=False)
    d = decide([device(SourceKind.QUANTUM_LOCAL), bad], None)
    assert d.tier is Tier.ENTROPY_ENHANCED
    assert any(r.startswith("not used: m at /dev/x: health test failure") for r in d.reasons)
