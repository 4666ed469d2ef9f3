"""Tier 4 over a real SSH channel: a QKD key from a real ETSI 014 KME pair seals every frame."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from hardware.kme import Key
from hardware.simulators.kme_server import KMESimulator
from hardware.simulators.tls import ThrowawayPKI
from sidecar.errors import SidecarError, TierRequired
from tests.service.conftest import Keys
from tests.service.rawchannel import RawChannel
from tests.tiers.conftest import MASTER, TierService, qkd_service, transaction
from transport.limits import ServiceLimits
from transport.protocol import HEADER, encode_request
from transport.protocol.sealing import Aead, RekeyPolicy
from transport.qkd import HELLO_ID, HELLO_METHOD, NONCE_BYTES, Hello, QKDFailed, QKDSettings

TWO_MILLION = "2000000"


def record_writes(client: Any) -> list[bytes]:
    """Every byte string the client hands to its SSH channel, in order."""
    written: list[bytes] = []
    chan = client._chan
    original = chan.write

    def write(data: bytes) -> None:
        written.append(bytes(data))
        original(data)

    chan.write = write
    return written


async def ping_many(client: Any, n: int) -> None:
    for _ in range(n):
        await client.ping()


def frame_bodies(stream: bytes) -> list[bytes]:
    bodies, offset = [], 0
    while offset < len(stream):
        (length,) = HEADER.unpack_from(stream, offset)
        bodies.append(stream[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return bodies


def not_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return False


async def test_kme_pair_gives_a_sealed_tier4_session_and_a_2m_transaction_is_accepted(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
) -> None:
    svc, client_qkd = sealed_service
    async with svc.connect(qkd=client_qkd(), require_qkd=True) as c:
        written = record_writes(c)
        tier = await c.tier()
        assert tier["tier"] == 4
        assert tier["session"]["tier"] == 4
        assert tier["session"]["sealed"] is True
        assert tier["node"]["tier"] == 4
        result = await c.submit(transaction(TWO_MILLION))
        assert result["persisted"] is True
        item = await c.pop()
        assert item["message"]["value_usd"] == TWO_MILLION
        # On the wire, both ways: sealed bodies, never plain orjson.
        sent = frame_bodies(b"".join(written))
        assert len(sent) >= 3
        assert all(not_json(b) for b in sent)
        assert all(TWO_MILLION.encode() not in b for b in sent)
        received = c.wire_frames_in
        assert len(received) >= 4  # confirm event + 3 replies
        assert all(not_json(b) for b in received)
    stats = svc.server._server_stats()
    assert stats["sealed_frames_in"] >= 3


async def test_without_qkd_the_same_transaction_is_refused_naming_what_is_missing(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
) -> None:
    svc, _ = sealed_service
    async with svc.connect() as c:
        with pytest.raises(TierRequired, match=r"needs tier 4 .*runs at tier 3.*not sealed"):
            await c.submit(transaction(TWO_MILLION))
        assert (await c.submit(transaction("999999.99")))["persisted"] is True


async def test_client_kme_failing_downgrades_the_session_and_refuses_2m(
    tmp_path: Path, keys: Keys, pki: ThrowawayPKI
) -> None:
    with KMESimulator(pki, "unavailable") as broken:
        async with qkd_service(tmp_path, keys, pki, server=broken, client=broken) as (svc, qkd):
            async with svc.connect(qkd=qkd) as c:
                assert c.sealing is None
                assert "enc_keys" in (c.qkd_failure or "")
                with pytest.raises(TierRequired, match="needs tier 4"):
                    await c.submit(transaction(TWO_MILLION))
            with pytest.raises(QKDFailed, match="503"):
                await svc.connect(qkd=qkd, require_qkd=True)


async def test_server_kme_failing_is_reported_and_the_session_stays_unsealed(
    tmp_path: Path, keys: Keys, pki: ThrowawayPKI, kme_pair: tuple[KMESimulator, KMESimulator]
) -> None:
    master, _ = kme_pair
    with KMESimulator(pki, "unavailable") as broken:
        async with qkd_service(tmp_path, keys, pki, server=broken, client=master) as (svc, qkd):
            async with svc.connect(qkd=qkd) as c:
                assert "dec_keys on the server's KME failed" in (c.qkd_failure or "")
                tier = await c.tier()
                assert tier["session"]["tier"] == 3
                assert any("QKD: " in r for r in tier["session"]["reasons"])
                with pytest.raises(TierRequired, match="needs tier 4"):
                    await c.submit(transaction(TWO_MILLION))


async def test_a_replayed_sealed_frame_on_the_wire_ends_the_session(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
) -> None:
    svc, client_qkd = sealed_service
    async with svc.connect(qkd=client_qkd(), require_qkd=True) as c:
        written = record_writes(c)
        await c.ping()
        replay = written[-1]
        c._chan.write(replay)  # the same sealed bytes again
        with pytest.raises(SidecarError, match="replayed sealed frame"):
            await c.ping()
        assert "replayed" in (c.closed_reason or "")


async def test_reordered_sealed_frames_on_the_wire_end_the_session(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
) -> None:
    svc, client_qkd = sealed_service
    async with svc.connect(qkd=client_qkd(), require_qkd=True) as c:
        first = c.sealing.seal(encode_request(900, "ping", {}))
        second = c.sealing.seal(encode_request(901, "ping", {}))
        c._chan.write(second + first)
        with pytest.raises(SidecarError, match="out of order"):
            await c.ping()


async def test_an_unsealed_frame_is_never_accepted_on_a_sealed_session(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
) -> None:
    svc, client_qkd = sealed_service
    async with svc.connect(qkd=client_qkd(), require_qkd=True) as c:
        c._chan.write(encode_request(7, "submit", {"message": transaction(TWO_MILLION)}))
        with pytest.raises(SidecarError, match="unsealed"):
            await c.ping()
    assert svc.queue.depth()["total"] == 0


async def test_frames_are_rekeyed_with_fresh_key_ids_by_count(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
    kme_pair: tuple[KMESimulator, KMESimulator],
) -> None:
    svc, client_qkd = sealed_service
    master, _ = kme_pair
    before = master.requests
    async with svc.connect(qkd=client_qkd(RekeyPolicy(frames=10)), require_qkd=True) as c:
        sent = 0
        for n in range(500):  # bounded; a rekey is due every 10 frames
            await c.submit(transaction("5", n))
            sent += 1
            if c.sealing.stream.rekeys >= 4:
                break
        assert c.sealing.stream.rekeys >= 4
        assert await c.depth() == sent
        tier = await c.tier()
        assert tier["tier"] == 4
        assert tier["session"]["rekeys"] >= 4
        assert tier["session"]["epoch"] >= 4
    assert master.requests - before >= 5  # one enc_keys per key: hello + each rekey


async def test_a_node_tier_drop_is_pushed_and_then_refuses(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
) -> None:
    svc, client_qkd = sealed_service
    async with svc.connect(qkd=client_qkd(), require_qkd=True) as c:
        await c.submit(transaction(TWO_MILLION, 1))
        svc.node.level, svc.node.reasons = 2, ("tier 4 unavailable: KME gone",)
        svc.server.tier_changed()
        await c.ping()  # the notice was pushed before this reply
        assert [n["tier"] for n in c.tier_notices] == [2]
        assert c.tier_notices[0]["previous"] == 4
        assert "KME gone" in " ".join(c.tier_notices[0]["reasons"])
        with pytest.raises(TierRequired, match="needs tier 4"):
            await c.submit(transaction(TWO_MILLION, 2))
        result = await c.submit({"kind": "gossip", "topic": "t", "data": "aGk="}, "async")
        assert result["mode"] == "async"
        assert result["upgraded"] is False


async def test_frames_are_rekeyed_by_key_age(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
) -> None:
    svc, client_qkd = sealed_service
    async with svc.connect(qkd=client_qkd(RekeyPolicy(seconds=0.05)), require_qkd=True) as c:
        for _ in range(200):  # bounded: a rekey is due after 50 ms of key age
            await c.ping()
            if c.sealing.stream.rekeys >= 2:
                break
            await asyncio.sleep(0.02)
        assert c.sealing.stream.rekeys >= 2
        assert (await c.tier())["tier"] == 4


async def test_a_client_that_never_rekeys_is_cut_off_by_the_server(
    tmp_path: Path,
    keys: Keys,
    pki: ThrowawayPKI,
    kme_pair: tuple[KMESimulator, KMESimulator],
) -> None:
    master, slave = kme_pair
    strict = RekeyPolicy(frames=5, grace=2)
    async with qkd_service(
        tmp_path, keys, pki, server=slave, client=master, server_rekey=strict
    ) as (svc, qkd):
        async with svc.connect(qkd=qkd, require_qkd=True) as c:
            c.sealing._maybe_rekey = lambda: None  # a client that ignores the limits
            with pytest.raises(SidecarError, match="did not rekey in time"):
                await ping_many(c, 20)


async def test_an_idle_sealed_channel_rekeys_by_age_on_its_own(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
) -> None:
    svc, client_qkd = sealed_service
    async with svc.connect(qkd=client_qkd(RekeyPolicy(seconds=0.05)), require_qkd=True) as c:
        for _ in range(200):  # bounded wait, no frames sent meanwhile
            if c.sealing.stream.rekeys >= 2:
                break
            await asyncio.sleep(0.02)
        assert c.sealing.stream.rekeys >= 2
        assert (await c.ping())["pong"] is True


class CorruptingKME:
    """The real slave KME client, but one bit of every key it returns is flipped: the
    two ends then hold different QKD keys (a mismatch no real KME pair should produce)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    async def enc_keys(self, slave_sae_id: str, number: int = 1, size: int | None = None) -> Any:
        return await self.real.enc_keys(slave_sae_id, number, size)

    async def dec_keys(self, master_sae_id: str, key_ids: Any) -> Any:
        keys = await self.real.dec_keys(master_sae_id, key_ids)
        return [Key(k.key_ID, bytes([k.key[0] ^ 1]) + k.key[1:]) for k in keys]


async def test_a_qkd_key_mismatch_fails_the_connection_with_a_clear_reason(
    tmp_path: Path,
    keys: Keys,
    pki: ThrowawayPKI,
    kme_pair: tuple[KMESimulator, KMESimulator],
) -> None:
    master, slave = kme_pair
    async with qkd_service(
        tmp_path, keys, pki, server=slave, client=master, server_kme=CorruptingKME
    ) as (svc, qkd):
        # not even without require_qkd: the channel is gone
        failure = await connect_failure(svc, qkd)
        assert re.search(r"QKD key agreement failed: .*failed authentication", failure), failure
        assert svc.queue.depth()["total"] == 0


async def connect_failure(svc: TierService, qkd: QKDSettings, **kwargs: Any) -> str:
    """Why ``connect(qkd=...)`` raised QKDFailed; a test failure saying why the session
    went on unsealed if it did not raise."""
    try:
        client = await svc.connect(qkd=qkd, **kwargs)
    except QKDFailed as exc:
        return exc.message
    await client.close()
    pytest.fail(f"connected unsealed instead of failing: qkd_failure={client.qkd_failure!r}")


async def test_a_server_without_a_kme_says_so_and_the_session_stays_unsealed(
    tmp_path: Path,
    keys: Keys,
    pki: ThrowawayPKI,
    kme_pair: tuple[KMESimulator, KMESimulator],
) -> None:
    master, _ = kme_pair
    async with qkd_service(tmp_path, keys, pki, server=None, client=master) as (svc, qkd):
        async with svc.connect(qkd=qkd) as c:
            assert "no QKD key manager configured" in (c.qkd_failure or "")
            assert (await c.tier())["session"]["tier"] == 3


class GatedKME:
    """The server's real KME client, held at ``dec_keys`` until the test opens the gate."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.gate = asyncio.Event()

    async def enc_keys(self, slave_sae_id: str, number: int = 1, size: int | None = None) -> Any:
        return await self.real.enc_keys(slave_sae_id, number, size)

    async def dec_keys(self, master_sae_id: str, key_ids: Any) -> Any:
        await self.gate.wait()
        return await self.real.dec_keys(master_sae_id, key_ids)


async def test_a_qkd_exchange_the_server_does_not_finish_in_time_ends_the_connection(
    tmp_path: Path,
    keys: Keys,
    pki: ThrowawayPKI,
    kme_pair: tuple[KMESimulator, KMESimulator],
) -> None:
    """The server holds the hello (its KME is gated) past the client's timeout: the
    server may seal the channel at any moment after, so the client cannot go on plain."""
    master, slave = kme_pair
    gated: list[GatedKME] = []

    def gate(real: Any) -> GatedKME:
        gated.append(GatedKME(real))
        return gated[-1]

    service = qkd_service(tmp_path, keys, pki, server=slave, client=master, server_kme=gate)
    async with service as (svc, qkd):
        try:
            failure = await connect_failure(svc, qkd, connect_timeout=6.0)
        finally:
            gated[0].gate.set()
        assert "did not complete the QKD exchange in time" in failure
        async with svc.connect() as plain:  # the server is fine for other sessions
            assert (await plain.ping())["pong"] is True


async def test_frames_sent_during_a_key_exchange_are_bounded(
    tmp_path: Path,
    keys: Keys,
    pki: ThrowawayPKI,
    kme_pair: tuple[KMESimulator, KMESimulator],
) -> None:
    master, slave = kme_pair
    gated: list[GatedKME] = []

    def gate(real: Any) -> GatedKME:
        gated.append(GatedKME(real))
        return gated[-1]

    limits = ServiceLimits(max_in_flight_per_channel=8)
    async with qkd_service(
        tmp_path, keys, pki, server=slave, client=master, server_kme=gate, limits=limits
    ) as (svc, _):
        raw = await RawChannel.open(svc.port, keys.everything, str(svc.known_hosts))
        try:
            hello = Hello(MASTER, ["key-1"], bytes(NONCE_BYTES), Aead.AES_256_GCM)
            raw.send({"id": HELLO_ID, "method": HELLO_METHOD, "params": hello.to_params()})
            for i in range(100):  # while the server waits for its KME
                raw.send({"id": i, "method": "ping", "params": {}})
            frames = []
            for _ in range(200):
                frame = await raw.recv(timeout=30.0)
                if frame is None:
                    break
                frames.append(frame)
            ended = [f for f in frames if f.get("event") == "session_closed"]
            assert ended, frames
            assert "during a QKD key exchange" in ended[0]["message"]
        finally:
            gated[0].gate.set()
            await raw.close()


async def test_a_channel_refused_sealing_is_logged_with_who_it_is(
    tmp_path: Path,
    keys: Keys,
    pki: ThrowawayPKI,
    kme_pair: tuple[KMESimulator, KMESimulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`QKD sealing refused for this channel: …` named no channel: with many clients
    and peers connected, the operator could not tell whose session went unsealed."""
    master, _ = kme_pair
    caplog.set_level(logging.WARNING, logger="transport.server_sealing")
    with KMESimulator(pki, "unavailable") as broken:
        async with qkd_service(tmp_path, keys, pki, server=broken, client=master) as (svc, qkd):
            async with svc.connect(qkd=qkd) as c:
                assert c.qkd_failure is not None
    (line,) = [r.getMessage() for r in caplog.records if "QKD sealing refused" in r.getMessage()]
    fingerprint = keys.everything.get_fingerprint("sha256")
    assert f"QKD sealing refused for the channel of everything {fingerprint} from 127.0.0.1:" in (
        line
    ), line
