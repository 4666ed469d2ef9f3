"""Tier 4: a QKD key_ID is used once per process (hello and rekey, server and client),
and keys shorter than the configured size ([hardware.kme].min_key_size) are refused."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from hardware.config import HardwareConfig
from hardware.kme import Key
from hardware.simulators.tls import ThrowawayPKI
from sidecar.daemon.config import Sealing
from sidecar.daemon.metrics import SidecarMetrics
from sidecar.daemon.wiring import ServerPart
from transport.entropy import EntropyMixer
from transport.protocol import HEADER, encode_request
from transport.protocol.sealing import Aead, SealedStream
from transport.qkd import (
    HELLO_ID,
    HELLO_METHOD,
    REKEY_METHOD,
    Hello,
    QKDFailed,
    QKDSettings,
    UsedKeyIds,
    b64,
    derive,
    fetch_master_key,
    fetch_slave_key,
)
from transport.server_sealing import SealState, ServerSealing

QKD_KEY = os.urandom(32)


class ReplayingKME:
    """A KME that hands a key out more than once (does not delete it once delivered)."""

    def __init__(self, key: bytes = QKD_KEY) -> None:
        self.key = key
        self.calls: list[list[str]] = []

    async def enc_keys(
        self, slave_sae_id: str, number: int = 1, size: int | None = None
    ) -> list[Key]:
        self.calls.append([f"size={size}"])
        return [Key("key-1", self.key)]

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[str]) -> list[Key]:
        self.calls.append(list(key_ids))
        return [Key(k, self.key) for k in key_ids]


def server(settings: QKDSettings) -> tuple[ServerSealing, Any, list[asyncio.Task[None]]]:
    conn = SimpleNamespace(_session_id=os.urandom(32))
    tasks: list[asyncio.Task[None]] = []

    def spawn(c: Coroutine[Any, Any, None]) -> None:
        tasks.append(asyncio.get_running_loop().create_task(c))

    srv = ServerSealing(
        settings, conn, write=lambda b: None, deliver=lambda b: None,
        close=lambda r: None, spawn=spawn, changed=lambda: None,
    )  # fmt: skip
    return srv, conn, tasks


async def hello(srv: ServerSealing, tasks: list[asyncio.Task[None]], ids: list[str]) -> bytes:
    cnonce = os.urandom(32)
    params = Hello("sae-alice", ids, cnonce, Aead.AES_256_GCM).to_params()
    srv.incoming(encode_request(HELLO_ID, HELLO_METHOD, params)[HEADER.size :])
    await asyncio.gather(*tasks)
    return cnonce


async def test_server_refuses_a_rekey_that_reuses_the_hellos_key_id() -> None:
    kme = ReplayingKME()
    srv, conn, tasks = server(QKDSettings(kme=kme, sae_id="sae-bob", used=UsedKeyIds()))
    cnonce = await hello(srv, tasks, ["key-1"])
    assert srv.state is SealState.SEALED
    keys = derive(QKD_KEY, conn._session_id, 0, cnonce, srv._server_nonce, ["key-1"])
    client = SealedStream("client", Aead.AES_256_GCM, keys)
    params = {"epoch": 1, "key_ids": ["key-1"], "nonce": b64(os.urandom(32))}
    srv.incoming(client.seal(encode_request("qkd-rekey-1", REKEY_METHOD, params)[HEADER.size :]))
    await asyncio.gather(*tasks)
    assert srv.state is SealState.CLOSED
    assert srv.rekeys == 0
    assert srv.failure is not None
    assert "already used" in srv.failure
    assert kme.calls == [["key-1"]]  # the KME was not even asked again


async def test_a_hello_naming_a_key_id_another_session_used_goes_on_unsealed() -> None:
    settings = QKDSettings(kme=ReplayingKME(), sae_id="sae-bob", used=UsedKeyIds())
    first, _, tasks = server(settings)
    await hello(first, tasks, ["key-1"])
    assert first.state is SealState.SEALED
    second, _, tasks = server(settings)
    await hello(second, tasks, ["key-1"])
    assert second.state is SealState.PLAIN  # the documented fallback of a QKD failure
    assert second.failure is not None
    assert "already used" in second.failure


async def test_a_key_id_named_twice_in_one_hello_is_refused() -> None:
    srv, _, tasks = server(QKDSettings(kme=ReplayingKME(), sae_id="sae-bob", used=UsedKeyIds()))
    await hello(srv, tasks, ["key-1", "key-1"])
    assert srv.state is SealState.PLAIN
    assert srv.failure == "the same QKD key_ID is named twice"


async def test_the_client_refuses_a_key_id_its_kme_hands_out_again() -> None:
    settings = QKDSettings(kme=ReplayingKME(), sae_id="sae-alice", peer_sae_id="sae-bob",
                           used=UsedKeyIds())  # fmt: skip
    ids, _ = await fetch_master_key(settings)
    assert ids == ["key-1"]
    with pytest.raises(QKDFailed, match="already used"):
        await fetch_master_key(settings)  # a rekey (or a new session) with the same key


def test_the_used_key_ids_are_bounded() -> None:
    used = UsedKeyIds(limit=3)
    for i in range(5):
        used.consume("sae-alice", [f"k{i}"])
    assert len(used) == 3
    with pytest.raises(QKDFailed):
        used.consume("sae-alice", ["k4"])


async def test_keys_shorter_than_key_bits_are_refused_on_both_sides() -> None:
    kme = ReplayingKME(os.urandom(32))  # 256 bits
    server_side = QKDSettings(kme=kme, sae_id="sae-bob", key_bits=1024, used=UsedKeyIds())
    with pytest.raises(QKDFailed, match="256 bits; at least 1024"):
        await fetch_slave_key(server_side, "sae-alice", ["key-1"])
    client_side = QKDSettings(kme=kme, sae_id="sae-alice", peer_sae_id="sae-bob",
                              key_bits=1024, used=UsedKeyIds())  # fmt: skip
    with pytest.raises(QKDFailed, match="256 bits; at least 1024"):
        await fetch_master_key(client_side)
    assert ["size=1024"] in kme.calls  # and the client asked for that size


async def test_the_daemon_seals_with_kme_min_key_size(pki: ThrowawayPKI) -> None:
    pair = pki.clients["sae-bob"]
    kme = {"url": "https://127.0.0.1:1", "sae_id": "sae-bob", "slave_sae_id": "sae-alice",
           "cert": pair.cert, "key": pair.key, "ca": pki.ca, "min_key_size": 1024}  # fmt: skip
    hw = HardwareConfig.from_dict({"use_udev": False, "char_devices": [], "kme": kme})
    cfg = SimpleNamespace(hardware=hw, tiers=SimpleNamespace(sealing=Sealing()))
    part = ServerPart(cfg, SidecarMetrics("t"), None, None, EntropyMixer())  # type: ignore[arg-type]
    settings = part._qkd()
    assert part._kme is not None
    await part._kme.aclose()
    assert settings is not None
    assert settings.key_bits == 1024
