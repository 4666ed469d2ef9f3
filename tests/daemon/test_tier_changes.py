"""The tier follows the hardware while serving: STATUS=, stdout and metrics say so."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

from hardware.simulators.serial_qrng import SerialQRNGSimulator
from tests.subprocesses import free_port, is_listening

from .harness import NotifySocket, run_serve

HW = """
[hardware]
use_udev = false
char_devices = []
sample_bytes = 2048
check_interval = 0.5
"""


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_qrng_unplugged_while_serving_drops_to_tier_2(
    tmp_path: Path, notify_socket: NotifySocket, spawn: Any
) -> None:
    mport = free_port()
    sim = SerialQRNGSimulator("good")
    sim.start()
    try:
        (tmp_path / "c.toml").write_text(
            f'listen = "127.0.0.1:{free_port()}"\ndata_dir = "d"\n'
            f'[metrics]\nlisten = "127.0.0.1:{mport}"\n'
            + HW
            + f'serial_ports = [{{ path = "{sim.path}", kind = "quantum_local", '
            + "simulated = true }]\n"
        )
        d = spawn(["--config", "c.toml"], NOTIFY_SOCKET=str(notify_socket.path))
        ready = notify_socket.wait_for("READY=1")
        assert "tier 3 EntropyEnhanced" in ready
        assert _metric(mport, "qssh_security_tier") == 3
    finally:
        sim.stop()  # unplugged
    d.wait_line(r"^tier changed 3 -> 2: ")
    assert "tier 2 HardenedPQ" in notify_socket.wait_for("tier 2 HardenedPQ")
    assert _metric(mport, "qssh_security_tier") == 2
    assert _metric(mport, 'qssh_security_tier_changes_total{direction="down"}') == 1
    assert d.stop() == 0


def test_hardware_below_the_operator_floor_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "c.toml").write_text(
        f'listen = "127.0.0.1:{port}"\ndata_dir = "d"\n[metrics]\nlisten = ""\n'
        + HW
        + "floor = 3\n"
    )
    r = run_serve(["--config", "c.toml"], cwd=tmp_path)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("qssh-sidecar:")]
    assert len(lines) == 1
    assert "below the configured floor 3" in lines[0]
    assert not is_listening(port)
