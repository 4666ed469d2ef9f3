"""The Substrate ecosystem's own JavaScript client, ``@polkadot/rpc-provider``
(``WsProvider`` and ``HttpProvider``, pinned in ``polkadot/package-lock.json`` and
installed by ``.ci/run`` with ``npm ci``), against a real daemon: it lists
``rpc_methods``, submits, subscribes, acks from the callback, unsubscribes, and
follows a tier change (a simulated QRNG turning stuck under it: the entropy publisher's
health test fails and the tier drops from 3 to 2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from hardware.simulators.serial_qrng import Behaviour, SerialQRNGSimulator
from tests.subprocesses import free_port

CLIENT = Path(__file__).parent / "polkadot"
RUN_TIMEOUT = 90.0


def _node_client_or_skip() -> str:
    node = shutil.which("node")
    installed = (CLIENT / "node_modules" / "@polkadot" / "rpc-provider").is_dir()
    if node is None or not installed:
        if os.environ.get("CI"):
            pytest.fail("node and tests/daemon/polkadot/node_modules must be installed (.ci/run)")
        pytest.skip("run `npm ci` in tests/daemon/polkadot (node >= 18) for this test")
    return node


def test_polkadot_js_ws_and_http_providers_drive_the_endpoint(tmp_path: Path, spawn: Any) -> None:
    node = _node_client_or_skip()
    sim = SerialQRNGSimulator("good")
    sim.start()
    try:
        (tmp_path / "c.toml").write_text(
            f'listen = "127.0.0.1:{free_port()}"\ndata_dir = "d"\n[metrics]\nlisten = ""\n'
            f'[node]\nhttp = "127.0.0.1:{free_port()}"\n'
            "[hardware]\nuse_udev = false\nchar_devices = []\nsample_bytes = 2048\n"
            "check_interval = 60\n"
            f'serial_ports = [{{ path = "{sim.path}", kind = "quantum_local", '
            "simulated = true }]\n"
            "[tiers.entropy]\ninterval = 0.5\nbytes = 1024\n"  # a stuck 1 KiB read fails at once
        )
        d = spawn(["--config", "c.toml"])
        d.wait_ready()
        port = d.port("node_http")
        client = subprocess.Popen(
            [node, "client.mjs", f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"],
            cwd=CLIENT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        timer = threading.Timer(RUN_TIMEOUT, client.kill)
        timer.start()
        try:
            assert client.stdout is not None
            steps = []
            for line in client.stdout:
                if not line.startswith("{"):
                    continue
                step = orjson.loads(line)
                steps.append(step)
                if step["step"] == "waiting-for-tier-change":
                    assert step["tier"] == 3
                    sim.behaviour = Behaviour.STUCK  # its health test fails: tier 2
                    d.wait_line(r"^tier changed 3 -> 2: ")
            client.wait(10)
        finally:
            timer.cancel()
        assert client.returncode == 0, client.stderr.read() if client.stderr else ""
    finally:
        sim.stop()
    result = steps[-1]["result"]

    for methods in (result["httpMethods"], result["wsMethods"]):
        assert {
            "rpc_methods",
            "qssh_submitMessage",
            "qssh_subscribeMessages",
            "qssh_unsubscribeMessages",
            "qssh_ackMessage",
            "qssh_subscribeTier",
        } <= set(methods)
    assert result["httpLeased"] == result["httpSubmitted"]
    assert result["httpAcked"] is True
    assert result["name"] == "alice"
    assert result["delivered"] == result["submitted"]  # same priority: id order
    assert result["deliveredKinds"] == ["BlockImport"]  # kinds: no entropy_share, no gossip
    assert result["gossipLeased"] == result["gossipSubmitted"]  # left for another consumer
    assert result["gossipAcked"] is True
    assert result["deliveredFrom"] == ["node:alice"] * 3
    assert result["deliveredMessage"]["BlockImport"]["block_number"] == 2
    assert result["acked"] is True
    assert result["unsubscribed"] is True
    tiers = result["tiers"]
    assert tiers[0]["tier"] == 3
    assert tiers[-1]["tier"] == 2
    assert tiers[-1]["previous"] == 3
    assert tiers[-1]["reasons"]
    assert result["tierUnsubscribed"] is True
    assert d.stop() == 0
