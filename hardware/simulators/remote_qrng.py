"""A remote entropy endpoint on 127.0.0.1: `GET /?bytes=n` answers n raw bytes.

Stands in for a configured quantum-remote service (`[[hardware.remote_endpoints]]`).
"""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BYTES = 1 << 20


class RemoteQRNGSimulator:
    def __init__(self, behaviour: str = "good") -> None:
        self.behaviour = behaviour  # good | stuck
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                n = min(int(query.get("bytes", ["32"])[0]), MAX_BYTES)
                body = b"\x42" * n if sim.behaviour == "stuck" else os.urandom(n)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> RemoteQRNGSimulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
