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
    """The units as the documented `make install` writes them, as instance `alice`.

    PREFIX is this test run's own venv (its bin/qssh-sidecar exists, as verify demands);
    the unit, target, snippets and docs go under ``tmp_path``.
    """
    dirs = {
        "UNITDIR": tmp_path / "units",
        "SYSUSERSDIR": tmp_path / "sysusers.d",
        "TMPFILESDIR": tmp_path / "tmpfiles.d",
        "DOCDIR": tmp_path / "doc",
    }
    r = subprocess.run(
        ["make", "-s", "install-units", f"PREFIX={sys.prefix}"]
        + [f"{k}={v}" for k, v in dirs.items()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    installed = dirs["UNITDIR"] / "qssh-sidecar@.service"
    text = installed.read_text()
    assert f"ExecStart={sys.prefix}/bin/qssh-sidecar serve " in text
    doc = re.search(r"^Documentation=file:(\S+)$", text, re.MULTILINE)
    assert doc, text
    assert Path(doc.group(1)).is_file(), doc.group(1)  # the docs were installed there
    unit = tmp_path / "qssh-sidecar@alice.service"
    unit.write_text(text)
    shutil.copy(dirs["UNITDIR"] / TARGET.name, tmp_path / TARGET.name)
    return unit


def test_the_shipped_unit_names_the_documented_install_paths() -> None:
    text = UNIT.read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "PREFIX ?= /opt/qssh-sidecar" in makefile
    assert "DOCDIR ?= /usr/share/doc/qssh-sidecar" in makefile
    assert "ExecStart=/opt/qssh-sidecar/bin/qssh-sidecar serve " in text
    assert "Documentation=file:/usr/share/doc/qssh-sidecar/operations.md" in text
    operations = (REPO / "docs" / "operations.md").read_text()
    assert "make install" in operations
    assert "/opt/qssh-sidecar/bin/qssh-sidecar" in operations


def test_make_run_installs_runtime_dependencies_only(tmp_path: Path) -> None:
    def planned(target: str) -> str:
        r = subprocess.run(
            ["make", "-n", "-B", target, f"VENV={tmp_path / 'venv'}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    run = planned("run")
    assert "pip install -q -e .\n" in run
    assert "[test" not in run
    assert "pip install -q -e '.[test,bench,faults]'" in planned("test")


def test_license_file_matches_pyproject() -> None:
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text()
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text


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
