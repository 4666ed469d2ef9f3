"""ETSI GS QKD 014 KME simulator: HTTPS with mutual TLS on 127.0.0.1.

The stdlib threading HTTP server (one request per connection) behind an ssl socket,
run in its own thread so blocking tests, async tests and subprocesses can all use it;
a refused client certificate gets a proper TLS alert. Two
simulators sharing one `QKDLink` are a master/slave pair: keys handed out by
`enc_keys` on one are returned by `dec_keys` on the other.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from hardware.simulators.tls import ThrowawayPKI, make_pki

MAX_REQUEST = 64 * 1024


class KMEBehaviour(StrEnum):
    OK = "ok"
    NO_KEYS = "no_keys"
    UNAVAILABLE = "unavailable"  # every request answers 503
    SLOW = "slow"
    MALFORMED = "malformed"
    DEPLETION = "depletion"  # a small key store that runs dry


@dataclass
class QKDLink:
    """The keys shared by two KMEs: stored count plus keys handed out, not yet retrieved."""

    stored_key_count: int = 1000
    key_size: int = 256
    max_key_count: int = 100_000
    max_key_per_request: int = 128
    max_key_size: int = 1024
    min_key_size: int = 64
    delivered: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class HTTPProblem(Exception):
    def __init__(self, status: int, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []


class KMESimulator:
    def __init__(
        self,
        pki: ThrowawayPKI,
        behaviour: KMEBehaviour | str = KMEBehaviour.OK,
        *,
        kme_id: str = "KME-A",
        peer_kme_id: str = "KME-B",
        link: QKDLink | None = None,
        slow_seconds: float = 3.0,
    ) -> None:
        self.pki = pki
        self.behaviour = KMEBehaviour(behaviour)
        self.kme_id, self.peer_kme_id = kme_id, peer_kme_id
        self.link = link or QKDLink()
        if self.behaviour is KMEBehaviour.NO_KEYS:
            self.link.stored_key_count = 0
        elif self.behaviour is KMEBehaviour.DEPLETION:
            self.link.stored_key_count = 3
        self.slow_seconds = slow_seconds
        self.port = 0
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._tls_ctx: ssl.SSLContext | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kme-{kme_id}", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> KMESimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10) or self._server is None:
            raise RuntimeError("KME simulator did not start")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._thread.join(timeout=10)

    def _tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.pki.ca)
        ctx.load_cert_chain(self.pki.server.cert, self.pki.server.key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _run(self) -> None:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet; never logs bodies (they carry keys)

            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_REQUEST:
                    self._send(400, orjson.dumps({"message": "request too large"}))
                    return
                self._answer(self.rfile.read(length))

            def _answer(self, raw: bytes) -> None:
                sock = self.connection
                peer = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
                caller = _common_name(peer)
                self._send(*sim._respond(self.command, self.path, raw, str(caller)))

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                sock, addr = self.socket.accept()
                sock.settimeout(10)
                return sock, addr

            def finish_request(self, request: Any, client_address: Any) -> None:
                # The TLS handshake runs in this connection's own thread: a client that
                # stalls in it (a request cancelled mid-connect) holds up only itself,
                # never the accept loop and with it every other SAE's request.
                assert sim._tls_ctx is not None
                tls = sim._tls_ctx.wrap_socket(
                    request, server_side=True, do_handshake_on_connect=False
                )
                try:
                    tls.do_handshake()
                except OSError:
                    _linger_close(tls)
                    return
                try:
                    super().finish_request(tls, client_address)
                finally:
                    self.shutdown_request(tls)

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # refused handshakes and dropped clients are expected here

        self._tls_ctx = self._tls()
        try:
            self._server = Server(("127.0.0.1", 0), Handler)
        finally:
            self._ready.set()
        self.port = self._server.server_address[1]
        self._server.serve_forever(poll_interval=0.1)

    def _respond(self, method: str, target: str, raw: bytes, caller: str) -> tuple[int, bytes]:
        self.requests += 1
        if self.behaviour is KMEBehaviour.SLOW:
            time.sleep(self.slow_seconds)
        if self.behaviour is KMEBehaviour.MALFORMED:
            return 200, b'{"keys": [ {"key_ID": '
        if self.behaviour is KMEBehaviour.UNAVAILABLE:
            return 503, orjson.dumps({"message": "KME out of service (simulated)"})
        try:
            body = self._route(method, target, raw, caller)
        except HTTPProblem as p:
            err: dict[str, Any] = {"message": p.message}
            if p.details:
                err["details"] = p.details
            return p.status, orjson.dumps(err)
        return 200, orjson.dumps(body)

    def _route(self, method: str, target: str, raw: bytes, caller: str) -> dict[str, Any]:
        parts = urlsplit(target)
        segs = [unquote(s) for s in parts.path.strip("/").split("/")]
        if len(segs) != 5 or segs[:3] != ["api", "v1", "keys"]:
            raise HTTPProblem(404, f"no such endpoint {parts.path}")
        sae, op = segs[3], segs[4]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body: dict[str, Any] = {}
        if method == "POST":
            try:
                loaded = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise HTTPProblem(400, "request body is not JSON") from exc
            if not isinstance(loaded, dict):
                raise HTTPProblem(400, "request body is not a JSON object")
            body = loaded
        elif method != "GET":
            raise HTTPProblem(405, f"{method} not allowed")
        if op == "status" and method == "GET":
            return self._status(caller, sae)
        if op == "enc_keys":
            src = body if method == "POST" else query
            return self._enc_keys(
                caller, sae, _pos_int(src, "number", 1), _size(src, self.link.key_size)
            )
        if op == "dec_keys":
            if method == "POST":
                ids = [k.get("key_ID") for k in body.get("key_IDs", []) if isinstance(k, dict)]
            else:
                ids = [query.get("key_ID")]
            if not ids or not all(isinstance(i, str) for i in ids):
                raise HTTPProblem(400, "key_ID(s) missing")
            return self._dec_keys(caller, sae, [str(i) for i in ids])
        raise HTTPProblem(404, f"no such endpoint {op}")

    def _status(self, master: str, slave: str) -> dict[str, Any]:
        link = self.link
        return {
            "source_KME_ID": self.kme_id,
            "target_KME_ID": self.peer_kme_id,
            "master_SAE_ID": master,
            "slave_SAE_ID": slave,
            "key_size": link.key_size,
            "stored_key_count": link.stored_key_count,
            "max_key_count": link.max_key_count,
            "max_key_per_request": link.max_key_per_request,
            "max_key_size": link.max_key_size,
            "min_key_size": link.min_key_size,
            "max_SAE_ID_count": 0,
        }

    def _enc_keys(self, master: str, slave: str, number: int, size: int) -> dict[str, Any]:
        link = self.link
        if number > link.max_key_per_request:
            raise HTTPProblem(400, f"number exceeds max_key_per_request {link.max_key_per_request}")
        if size % 8 or not link.min_key_size <= size <= link.max_key_size:
            raise HTTPProblem(
                400, f"size must be a multiple of 8 in [{link.min_key_size}, {link.max_key_size}]"
            )
        keys = []
        with link.lock:
            if link.stored_key_count < number:
                raise HTTPProblem(
                    400, "keys are being exhausted", [{"stored_key_count": link.stored_key_count}]
                )
            link.stored_key_count -= number
            for _ in range(number):
                key_id, key = str(uuid.uuid4()), os.urandom(size // 8)
                link.delivered[key_id] = (master, slave, key)
                keys.append({"key_ID": key_id, "key": base64.b64encode(key).decode()})
        return {"keys": keys}

    def _dec_keys(self, slave: str, master: str, key_ids: list[str]) -> dict[str, Any]:
        link = self.link
        with link.lock:
            found = []
            for key_id in key_ids:
                entry = link.delivered.get(key_id)
                if entry is None:
                    raise HTTPProblem(400, "key not found", [{"key_ID": key_id}])
                if entry[0] != master or entry[1] != slave:
                    raise HTTPProblem(401, "SAE is not the slave of this key", [{"key_ID": key_id}])
                found.append((key_id, entry[2]))
            for key_id, _ in found:
                del link.delivered[key_id]  # a key is handed to the slave once
        return {"keys": [{"key_ID": k, "key": base64.b64encode(v).decode()} for k, v in found]}


def _linger_close(sock: socket.socket) -> None:
    """Close after a refused handshake without a reset, so the client reads the TLS alert.

    Closing with the client's request still unread would send RST, and the client
    would see "connection reset" instead of the alert.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(1.0)
        for _ in range(64):
            if not sock.recv(4096):
                break
    except OSError:
        pass
    finally:
        sock.close()


def _common_name(peer: Any) -> str:
    for rdn in (peer or {}).get("subject", ()):
        for attr in rdn:
            if attr[0] == "commonName":
                return str(attr[1])
    return ""


def _pos_int(src: dict[str, Any], name: str, default: int) -> int:
    raw = src.get(name, default)
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise HTTPProblem(400, f"{name} is not an integer") from exc
    if value < 1:
        raise HTTPProblem(400, f"{name} must be positive")
    return value


def _size(src: dict[str, Any], default: int) -> int:
    return _pos_int(src, "size", default)


def paired_kmes(
    pki: ThrowawayPKI, behaviour: KMEBehaviour | str = KMEBehaviour.OK
) -> tuple[KMESimulator, KMESimulator]:
    """Master-side and slave-side KMEs of one QKD link (not yet started)."""
    link = QKDLink()
    a = KMESimulator(pki, behaviour, kme_id="KME-A", peer_kme_id="KME-B", link=link)
    b = KMESimulator(pki, behaviour, kme_id="KME-B", peer_kme_id="KME-A", link=link)
    return a, b


def main() -> None:
    """Demo: `python -m hardware.simulators.kme_server DIR [behaviour]` prints a config."""
    ap = argparse.ArgumentParser(description="ETSI 014 KME simulator on 127.0.0.1 (demo)")
    ap.add_argument("directory", help="where the throwaway CA and certificates are written")
    ap.add_argument("behaviour", nargs="?", default="ok", choices=[b.value for b in KMEBehaviour])
    ap.add_argument("--seconds", type=float, default=3600.0)
    args = ap.parse_args()
    pki = make_pki(args.directory)
    alice = pki.clients["sae-alice"]
    with KMESimulator(pki, args.behaviour) as kme:
        print(
            f'[hardware.kme]\nurl = "{kme.url}"\nsae_id = "sae-alice"\nslave_sae_id = "sae-bob"\n'
            f'cert = "{alice.cert}"\nkey = "{alice.key}"\nca = "{pki.ca}"\nsimulated = true',
            flush=True,
        )
        time.sleep(args.seconds)


if __name__ == "__main__":
    main()
