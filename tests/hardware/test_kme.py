from __future__ import annotations

import socket

import pytest

from hardware.errors import (
    KMEBadRequest,
    KMEProtocolError,
    KMETimeout,
    KMETLSError,
    KMEUnauthorized,
    KMEUnavailable,
)
from hardware.kme import KMEClient
from hardware.probe import evaluate
from hardware.simulators.kme_server import KMESimulator, paired_kmes
from hardware.simulators.tls import ThrowawayPKI
from hardware.tier import Tier
from tests.hardware.conftest import config_for, kme_raw


def client(pki: ThrowawayPKI, url: str, sae: str = "sae-alice", timeout: float = 2.0) -> KMEClient:
    pair = pki.clients[sae]
    return KMEClient(url, cert=pair.cert, key=pair.key, ca=pki.ca, timeout=timeout)


async def test_status_has_the_standard_fields(pki: ThrowawayPKI) -> None:
    with KMESimulator(pki) as kme:
        async with client(pki, kme.url) as c:
            st = await c.status("sae-bob")
    assert (st.source_KME_ID, st.target_KME_ID) == ("KME-A", "KME-B")
    assert (st.master_SAE_ID, st.slave_SAE_ID) == ("sae-alice", "sae-bob")
    assert st.stored_key_count > 0
    assert st.key_size == 256
    assert st.min_key_size <= st.key_size <= st.max_key_size


async def test_a_client_stalled_in_its_tls_handshake_holds_up_no_other(
    pki: ThrowawayPKI,
) -> None:
    """A connection that never finishes its handshake (a request cancelled mid-connect
    leaves one) holds only its own thread: another SAE's request is answered meanwhile,
    well before the stalled one's 10 s handshake timeout."""
    with KMESimulator(pki) as kme, socket.create_connection(("127.0.0.1", kme.port)):
        async with client(pki, kme.url, timeout=5.0) as c:
            st = await c.status("sae-bob")
    assert st.master_SAE_ID == "sae-alice"


@pytest.mark.parametrize(("enc", "dec"), [("GET", "POST"), ("POST", "GET")])
async def test_paired_kmes_agree_on_keys(pki: ThrowawayPKI, enc: str, dec: str) -> None:
    master, slave = paired_kmes(pki)
    with master, slave:
        async with client(pki, master.url) as alice, client(pki, slave.url, "sae-bob") as bob:
            n = 2 if dec == "POST" else 1
            keys = await alice.enc_keys("sae-bob", n, 512, method=enc)  # type: ignore[arg-type]
            got = await bob.dec_keys("sae-alice", [k.key_ID for k in keys], method=dec)  # type: ignore[arg-type]
            after = await alice.status("sae-bob")
    assert got == keys
    assert len(keys) == n
    assert all(len(k.key) == 64 for k in keys)
    assert after.stored_key_count == 1000 - n
    assert "bits" in repr(keys[0])
    assert keys[0].key.hex() not in repr(keys[0])


async def test_a_key_is_delivered_to_the_slave_once(pki: ThrowawayPKI) -> None:
    master, slave = paired_kmes(pki)
    with master, slave:
        async with client(pki, master.url) as alice, client(pki, slave.url, "sae-bob") as bob:
            (key,) = await alice.enc_keys("sae-bob")
            await bob.dec_keys("sae-alice", [key.key_ID])
            with pytest.raises(KMEBadRequest) as info:
                await bob.dec_keys("sae-alice", [key.key_ID])
    assert info.value.status == 400
    assert info.value.message == "key not found"
    assert info.value.details == [{"key_ID": key.key_ID}]


async def test_wrong_client_certificate_is_a_tls_error(pki: ThrowawayPKI) -> None:
    rogue = pki.rogue_client
    with KMESimulator(pki) as kme:
        async with KMEClient(kme.url, cert=rogue.cert, key=rogue.key, ca=pki.ca) as c:
            with pytest.raises(KMETLSError):
                await c.status("sae-bob")


async def test_503_is_unavailable_with_the_etsi_message(pki: ThrowawayPKI) -> None:
    with KMESimulator(pki, "unavailable") as kme:
        async with client(pki, kme.url) as c:
            with pytest.raises(KMEUnavailable) as info:
                await c.status("sae-bob")
    assert info.value.status == 503
    assert "out of service" in info.value.message


async def test_slow_kme_times_out(pki: ThrowawayPKI) -> None:
    with KMESimulator(pki, "slow", slow_seconds=3.0) as kme:
        async with client(pki, kme.url, timeout=0.3) as c:
            with pytest.raises(KMETimeout):
                await c.status("sae-bob")


async def test_malformed_json_is_a_protocol_error(pki: ThrowawayPKI) -> None:
    with KMESimulator(pki, "malformed") as kme:
        async with client(pki, kme.url) as c:
            with pytest.raises(KMEProtocolError):
                await c.enc_keys("sae-bob")


async def test_key_depletion_is_a_bad_request_with_count(pki: ThrowawayPKI) -> None:
    with KMESimulator(pki, "depletion") as kme:
        async with client(pki, kme.url) as c:
            for _ in range(3):
                await c.enc_keys("sae-bob")
            with pytest.raises(KMEBadRequest) as info:
                await c.enc_keys("sae-bob")
            assert (await c.status("sae-bob")).stored_key_count == 0
    assert info.value.details == [{"stored_key_count": 0}]


async def test_healthy_kme_gives_tier_4_and_the_probe_spends_no_keys(pki: ThrowawayPKI) -> None:
    with KMESimulator(pki) as kme:
        d = await evaluate(config_for(kme=kme_raw(pki, kme.url)))
        assert kme.link.stored_key_count == 1000
        assert not kme.link.delivered
    assert d.tier is Tier.QUANTUM_SECURED
    assert d.simulated
    assert d.kme is not None
    assert d.kme.stored_key_count == 1000


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [("no_keys", "no stored keys"), ("unavailable", "KMEUnavailable"),
     ("malformed", "KMEProtocolError"), ("slow", "KMETimeout")],
)  # fmt: skip
async def test_unusable_kme_is_not_tier_4(pki: ThrowawayPKI, behaviour: str, reason: str) -> None:
    with KMESimulator(pki, behaviour, slow_seconds=3.0) as kme:
        d = await evaluate(config_for(kme=kme_raw(pki, kme.url)))
    assert d.tier is Tier.HARDENED_PQ
    assert any(r.startswith("tier 4 unavailable") and reason in r for r in d.reasons), d.reasons


async def test_bad_client_certificate_reported_as_tls_error(pki: ThrowawayPKI) -> None:
    raw = kme_raw(pki, "")
    raw["cert"], raw["key"] = pki.rogue_client.cert, pki.rogue_client.key
    with KMESimulator(pki) as kme:
        raw["url"] = kme.url
        d = await evaluate(config_for(kme=raw))
    assert d.tier is Tier.HARDENED_PQ
    assert d.kme is not None
    assert d.kme.error is not None
    assert "KMETLSError" in d.kme.error


async def test_small_kme_keys_are_not_tier_4(pki: ThrowawayPKI) -> None:
    raw = kme_raw(pki, "")
    raw["min_key_size"] = 2048  # the simulator's max_key_size is 1024
    with KMESimulator(pki) as kme:
        raw["url"] = kme.url
        d = await evaluate(config_for(kme=raw))
    assert d.tier is Tier.HARDENED_PQ
    assert any("below the required 2048" in r for r in d.reasons)


async def test_ceiling_caps_and_floor_flags(pki: ThrowawayPKI) -> None:
    with KMESimulator(pki) as kme:
        capped = await evaluate(config_for(kme=kme_raw(pki, kme.url), ceiling=3))
    assert capped.tier is Tier.ENTROPY_ENHANCED
    assert any("ceiling 3" in r for r in capped.reasons)
    floored = await evaluate(config_for(floor=3))
    assert floored.tier is Tier.HARDENED_PQ
    assert floored.below_floor
    assert any("floor 3" in r for r in floored.reasons)


async def test_only_the_slave_sae_may_fetch_a_key(pki: ThrowawayPKI) -> None:
    master, slave = paired_kmes(pki)
    with master, slave:
        async with client(pki, master.url) as alice, client(pki, slave.url) as alice_on_b:
            keys = await alice.enc_keys("sae-bob", method="POST", extension_optional=[{"x": 1}])
            with pytest.raises(KMEUnauthorized) as info:
                await alice_on_b.dec_keys("sae-alice", [keys[0].key_ID])
    assert info.value.status == 401


async def test_missing_client_certificate_file_is_reported_not_raised(pki: ThrowawayPKI) -> None:
    raw = kme_raw(pki, "https://127.0.0.1:1")
    raw["cert"] = "/nonexistent/cert.pem"
    d = await evaluate(config_for(kme=raw))
    assert d.tier is Tier.HARDENED_PQ
    assert d.kme is not None
    assert "KME client setup failed" in str(d.kme.error)


async def test_refused_connection_is_reported(pki: ThrowawayPKI) -> None:
    d = await evaluate(config_for(kme=kme_raw(pki, "https://127.0.0.1:1")))
    assert d.kme is not None
    assert "KMEConnectionError" in str(d.kme.error)
