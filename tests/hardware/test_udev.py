"""Probing real pyudev against umockdev device trees, in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hardware.simulators import udev
from tests.subprocesses import REPO, child_env

pytestmark = pytest.mark.skipif(
    shutil.which("umockdev-run") is None or shutil.which("umockdev-wrapper") is None,
    reason="umockdev not installed (Debian package umockdev)",
)
ENV = child_env()


def report_under_umockdev(tmp_path: Path, description: str) -> dict[str, Any]:
    devices = tmp_path / "devices.umockdev"
    devices.write_text(description)
    cfg = tmp_path / "hw.toml"
    cfg.write_text("[hardware]\nchar_devices = []\nsample_bytes = 1024\nread_timeout = 0.5\n")
    proc = subprocess.run(
        ["umockdev-run", "-d", str(devices), "--", sys.executable, "-m", "sidecar.cli",
         "hardware", "report", "--json", "--config", str(cfg)],
        capture_output=True, env=ENV, timeout=60, cwd=str(REPO), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def by_model(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(d["model"]): d for d in out["devices"]}


def test_quantis_pcie_with_parent_is_healthy_local_quantum(tmp_path: Path) -> None:
    out = report_under_umockdev(tmp_path, udev.quantis_pcie(os.urandom(4096)))
    dev = by_model(out)["ID Quantique Quantis PCIe"]
    assert dev["kind"] == "quantum_local"
    assert dev["path"] == "/dev/qrandom0"
    assert dev["driver"] == "quantis"
    assert dev["health"] == "pass"
    assert out["tier"] == 3


def test_qrandom_node_without_quantis_parent_is_not_quantum(tmp_path: Path) -> None:
    out = report_under_umockdev(tmp_path, udev.quantis_pcie(os.urandom(4096), with_parent=False))
    (dev,) = out["devices"]
    assert dev["kind"] == "unverified"
    assert out["tier"] == 2
    assert any("not local quantum hardware" in r for r in out["reasons"])


def test_stuck_quantis_is_a_health_failure(tmp_path: Path) -> None:
    out = report_under_umockdev(tmp_path, udev.quantis_pcie(b"\x00" * 4096))
    assert by_model(out)["ID Quantique Quantis PCIe"]["health"] == "fail"
    assert out["tier"] == 2


def test_usb_rngs_are_classified_by_ids_and_product(tmp_path: Path) -> None:
    description = "\n".join(
        [
            udev.quantis_usb(),
            udev.truerng(),
            udev.onerng(),
            udev.generic_ftdi(),
            udev.infinite_noise(),
        ]
    )
    devices = by_model(report_under_umockdev(tmp_path, description))
    assert devices["ID Quantique Quantis USB"]["kind"] == "quantum_local"
    assert "libusb" in str(devices["ID Quantique Quantis USB"]["error"])
    assert devices["TrueRNG"]["kind"] == "trng"
    assert devices["TrueRNG"]["path"] == "/dev/ttyACM0"
    assert (devices["TrueRNG"]["vendor_id"], devices["TrueRNG"]["product_id"]) == ("04d8", "f5fe")
    assert devices["OneRNG"]["kind"] == "trng"
    assert devices["Infinite Noise TRNG"]["path"] == "/dev/ttyUSB1"
    assert len(devices) == 4  # the generic FTDI serial adapter is not an RNG


def test_hotplug_raises_and_lowers_the_tier_with_events() -> None:
    proc = subprocess.run(
        ["umockdev-wrapper", sys.executable, str(REPO / "tests/hardware/hotplug_driver.py")],
        capture_output=True, env=ENV, timeout=90, cwd=str(REPO), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert lines[-1] == "done"
    records = [json.loads(x) for x in lines[:-1]]
    changes = [(r["old"], r["new"]) for r in records if "new" in r]
    assert changes == [(None, 2), (2, 3), (3, 2)]
    assert {"quantum_bytes": 1024} in records
    assert next(r["hotplug_events"] for r in records if "hotplug_events" in r) >= 2
    lowered = [r for r in records if r.get("new") == 2][-1]
    assert "tier 3 unavailable: no local quantum RNG found" in lowered["reasons"]
