"""KMEClient refuses what a KME must not send: plain HTTP, unbounded or malformed answers."""

from __future__ import annotations

import base64
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import orjson
import pytest

from hardware.config import HardwareConfig, HardwareConfigError
from hardware.errors import KMEBadRequest, KMEProtocolError
from hardware.kme import MAX_ERROR_CHARS, KMEClient
from hardware.simulators.kme_server import KMESimulator
from hardware.simulators.tls import ThrowawayPKI
from transport.qkd import QKDFailed, QKDSettings, UsedKeyIds, fetch_slave_key


def client(pki: ThrowawayPKI, url: str, sae: str = "sae-alice") -> KMEClient:
    pair = pki.clients[sae]
    return KMEClient(url, cert=pair.cert, key=pair.key, ca=pki.ca, timeout=10.0)


class _PlainKME(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        key = base64.b64encode(b"s" * 32).decode()
        body = orjson.dumps({"keys": [{"key_ID": "plain", "key": key}]})
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def plain_kme() -> Iterator[str]:
    srv = HTTPServer(("127.0.0.1", 0), _PlainKME)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_plain_http_kme_url_is_a_config_error_naming_the_key() -> None:
    raw = {"url": "http://127.0.0.1:1", "sae_id": "a", "slave_sae_id": "b",
           "cert": "c", "key": "k", "ca": "ca"}  # fmt: skip
    with pytest.raises(HardwareConfigError, match=r"kme\.url must be an https:// URL"):
        HardwareConfig.from_dict({"use_udev": False, "char_devices": [], "kme": raw})


async def test_kme_client_refuses_a_plain_http_url(pki: ThrowawayPKI, plain_kme: str) -> None:
    """No key ever comes over plain HTTP: the client will not even be built."""
    with pytest.raises(ValueError, match="must be https://"):
        async with client(pki, plain_kme) as c:
            await c.enc_keys("sae-bob", 1, 256)


class CannedKME(KMESimulator):
    """Answers every request with a canned status and body."""

    body: bytes = b"{}"
    status: int = 200

    def _respond(self, method: str, target: str, raw: bytes, caller: str) -> tuple[int, bytes]:  # type: ignore[override]
        self.requests += 1
        return self.status, self.body


async def assert_refused(
    pki: ThrowawayPKI,
    body: bytes,
    call: Callable[[KMEClient], Awaitable[object]],
    match: str,
    sae: str = "sae-alice",
) -> None:
    """A KME answering `body` to every request: `call` on a client of `sae` raises
    KMEProtocolError matching `match`."""
    kme = CannedKME(pki)
    kme.body = body
    with kme:
        async with client(pki, kme.url, sae) as c:
            with pytest.raises(KMEProtocolError, match=match):
                await call(c)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def keys_body(*pairs: tuple[str, bytes]) -> bytes:
    return orjson.dumps({"keys": [{"key_ID": i, "key": b64(k)} for i, k in pairs]})


async def test_more_keys_than_asked_for_are_refused(pki: ThrowawayPKI) -> None:
    await assert_refused(
        pki,
        keys_body(*[(f"id-{i}", b"k" * 32) for i in range(50)]),
        lambda c: c.enc_keys("sae-bob", 1, 256),
        "50 keys, asked for 1",
    )


async def test_dec_keys_must_answer_exactly_the_key_ids_asked(pki: ThrowawayPKI) -> None:
    await assert_refused(
        pki,
        keys_body(("other", b"k" * 32)),
        lambda c: c.dec_keys("sae-alice", ["mine"]),
        "other key_IDs than asked",
        sae="sae-bob",
    )


@pytest.mark.parametrize("key", [b"\x01", b"\x02" * 33, b"\x03" * (64 << 10)])
async def test_a_key_of_another_size_than_asked_is_refused(pki: ThrowawayPKI, key: bytes) -> None:
    await assert_refused(
        pki,
        keys_body(("k", key)),
        lambda c: c.enc_keys("sae-bob", 1, 256),
        r"wrong size|bits, asked for 256",
    )


async def test_an_oversized_key_is_refused_when_no_size_was_asked(pki: ThrowawayPKI) -> None:
    await assert_refused(
        pki,
        keys_body(("k", b"\x02" * (64 << 10))),
        lambda c: c.dec_keys("sae-alice", ["k"]),
        "wrong size",
        sae="sae-bob",
    )


@pytest.mark.parametrize("ids", [["same", "same"], ["", "x"]])
async def test_duplicate_or_empty_key_ids_are_refused(pki: ThrowawayPKI, ids: list[str]) -> None:
    await assert_refused(
        pki,
        keys_body(*[(i, b"a" * 32) for i in ids]),
        lambda c: c.dec_keys("sae-alice", ["same", "x"]),
        r"twice|empty",
        sae="sae-bob",
    )


async def test_a_response_body_over_the_cap_is_refused(pki: ThrowawayPKI) -> None:
    await assert_refused(
        pki,
        orjson.dumps({"status_extension": {"pad": "x" * (2 << 20)}}),
        lambda c: c.status("sae-bob"),
        "more than 1048576 bytes",
    )


async def test_a_status_extension_that_is_not_an_object_is_refused(pki: ThrowawayPKI) -> None:
    kme = CannedKME(pki)
    fields = dict.fromkeys(("source_KME_ID", "target_KME_ID", "master_SAE_ID", "slave_SAE_ID"), "x")
    counts = ("key_size", "stored_key_count", "max_key_count", "max_key_per_request",
              "max_key_size", "min_key_size")  # fmt: skip
    kme.body = orjson.dumps({**fields, **dict.fromkeys(counts, 256), "status_extension": [1]})
    with kme:
        async with client(pki, kme.url) as c:
            with pytest.raises(KMEProtocolError, match="status_extension"):
                await c.status("sae-bob")


async def test_a_kme_error_message_is_truncated_before_logs_and_peers(pki: ThrowawayPKI) -> None:
    kme = CannedKME(pki)
    kme.status = 400
    kme.body = orjson.dumps({"message": "M" * (200 << 10), "details": [{"x": "y" * 500}] * 200})
    with kme:
        async with client(pki, kme.url, "sae-bob") as c:
            with pytest.raises(KMEBadRequest) as bad:
                await c.dec_keys("sae-alice", ["k1"])
            settings = QKDSettings(kme=c, sae_id="sae-bob", used=UsedKeyIds())
            with pytest.raises(QKDFailed) as failed:
                await fetch_slave_key(settings, "sae-alice", ["k2"])
    assert len(bad.value.message) <= MAX_ERROR_CHARS + 1
    assert len(orjson.dumps(bad.value.details)) < 10_000
    assert len(failed.value.message) < 1000
