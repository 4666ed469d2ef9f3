"""The systemd units pass ``systemd-analyze verify``; ``security`` is reported."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.subprocesses import REPO

UNIT = REPO / "systemd" / "qssh-sidecar@.service"
TARGET = REPO / "systemd" / "qssh-sidecar.target"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def _instance_units(tmp_path: Path) -> Path:
    """The template as `alice`, with ExecStart pointing at this checkout's interpreter.

    verify checks that the ExecStart binary exists; the packaged path /usr/bin/qssh-sidecar
    does not exist in a source checkout, so it is the only line rewritten.
    """
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/qssh-sidecar serve " in text
    text = text.replace("/usr/bin/qssh-sidecar", f"{sys.executable} -m sidecar.cli")
    unit = tmp_path / "qssh-sidecar@alice.service"
    unit.write_text(text)
    shutil.copy(TARGET, tmp_path / TARGET.name)
    return unit


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _instance_units(tmp_path)
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit), str(tmp_path / TARGET.name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # verify prints warnings without failing; any output about our units is a defect.
    ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "qssh-sidecar" in ln]
    assert r.returncode == 0, r.stdout + r.stderr
    assert not ours, r.stdout + r.stderr


def test_unit_has_the_required_hardening() -> None:
    text = UNIT.read_text()
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=qssh-sidecar/%i",
        "User=qssh-sidecar",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "DevicePolicy=closed",
        "DeviceAllow=char-ttyACM rw",
        "DeviceAllow=/dev/hwrng r",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "PartOf=qssh-sidecar.target",
    ]:
        assert line in text, line


def test_security_exposure_is_reported_and_low(tmp_path: Path) -> None:
    unit = _instance_units(tmp_path)
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    print(f"systemd-analyze security: {m.group(1)} {m.group(2)}")
    assert float(m.group(1)) <= 2.0, r.stdout
