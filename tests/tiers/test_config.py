"""The daemon's ``[tiers]`` table: strict, every mistake named."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sidecar.daemon.config import ConfigError, from_dict
from sidecar.daemon.wiring import tier_notes
from transport.protocol.sealing import Aead


def load(tiers: dict[str, Any]) -> Any:
    return from_dict({"tiers": tiers}, base=Path("/tmp"))


def test_defaults_are_the_spec_values() -> None:
    cfg = from_dict({}, base=Path("/tmp"))
    policy = cfg.tiers.policy
    assert policy.value_bounds == (Decimal(100), Decimal(10_000), Decimal(1_000_000))
    assert dict(policy.host_keys) == {}
    assert cfg.tiers.sealing.aead is Aead.AES_256_GCM
    assert cfg.tiers.entropy.interval == 10.0


def test_every_setting_is_read() -> None:
    cfg = load(
        {
            "value_thresholds": [50, 5000, 500000],
            "host_keys": {"2": ["ssh-falcon1024"], "4": ["ssh-sphincssha2128fsimple"]},
            "entropy": {"interval": 0.5, "bytes": 32},
            "sealing": {"aead": "chacha20-poly1305", "rekey_frames": 10, "rekey_seconds": 5},
        }
    )
    t = cfg.tiers
    assert t.policy.required_tier({"kind": "transaction", "value_usd": "49.99"}) == 1
    assert t.policy.required_tier({"kind": "transaction", "value_usd": "500000"}) == 4
    assert t.policy.host_keys == {2: ("ssh-falcon1024",), 4: ("ssh-sphincssha2128fsimple",)}
    assert (t.entropy.interval, t.entropy.bytes) == (0.5, 32)
    assert (t.sealing.aead, t.sealing.rekey_frames, t.sealing.rekey_seconds) == (
        Aead.CHACHA20_POLY1305,
        10,
        5.0,
    )


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ({"value_thresholds": [100, 10]}, "tiers.value_thresholds"),
        ({"value_thresholds": [1, 2]}, "exactly 3"),
        ({"host_keys": {"1": ["ssh-falcon512"]}}, "unknown key 'tiers.host_keys.1'"),
        ({"host_keys": {"2": []}}, "tiers.host_keys.2"),
        ({"entropy": {"bytes": 0}}, "tiers.entropy.bytes"),
        ({"entropy": {"interval": -1}}, "tiers.entropy"),
        ({"sealing": {"aead": "des"}}, "tiers.sealing.aead"),
        ({"sealing": {"rekey_frames": 0}}, "tiers.sealing.rekey_frames"),
        ({"sealing": {"rekey_seconds": 0}}, "tiers.sealing.rekey_seconds"),
        ({"sealling": {}}, "unknown key 'tiers.sealling'"),
    ],
)
def test_mistakes_are_refused_naming_the_setting(tiers: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tiers)


KME = {"url": "https://127.0.0.1:1", "sae_id": "a", "slave_sae_id": "b"}
KME_FILES = {"cert": "c.pem", "key": "k.pem", "ca": "ca.pem"}


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({}, "tier-4 sealing off (no [hardware.kme])"),
        (
            {"hardware": {"kme": {**KME, **KME_FILES}}, "tiers": {"sealing": {"enabled": False}}},
            "tier-4 sealing off (tiers.sealing.enabled = false)",
        ),
        ({"hardware": {"kme": {**KME, **KME_FILES}}}, "tier-4 sealing on, QKD keys from"),
    ],
)
def test_the_start_note_on_sealing_names_what_turned_it_off(
    data: dict[str, Any], said: str
) -> None:
    notes = tier_notes(from_dict(data, base=Path("/tmp")), "ssh-falcon512")
    assert any(said in note for note in notes), notes
