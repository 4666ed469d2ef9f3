"""KMEClient refuses what a KME must not send: plain HTTP, unbounded or malformed answers."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import orjson
import pytest

from hardware.config import HardwareConfig, HardwareConfigError
from hardware.kme import KMEClient
from hardware.simulators.tls import ThrowawayPKI


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
