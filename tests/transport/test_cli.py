"""``qssh-sidecar keygen`` and ``qssh-sidecar doctor`` as real subprocesses."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.subprocesses import child_env
from transport.keys import read_private_key, read_public_key


def qssh(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = child_env(HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def _openssh_fingerprint(public_line: str) -> str:
    """SHA256 fingerprint computed the way ssh-keygen -l does, independently of asyncssh."""
    blob = base64.b64decode(public_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def test_keygen_writes_key_pair_with_modes_and_prints_fingerprint(tmp_path: Path) -> None:
    key_file = tmp_path / "id_falcon"
    result = qssh("keygen", "-t", "ssh-falcon512", "-f", str(key_file), "-C", "alice@v1",
                  home=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pub = Path(f"{key_file}.pub")
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    public_line = pub.read_text()
    assert public_line.startswith("ssh-falcon512 AAAA")
    assert public_line.rstrip().endswith(" alice@v1")
    lines = result.stdout.splitlines()
    assert lines[-2] == "The key fingerprint is:"
    assert lines[-1] == f"{_openssh_fingerprint(public_line)} alice@v1"
    key = read_private_key(key_file)
    assert key.public_data == read_public_key(pub).public_data


def test_keygen_with_passphrase_needs_it_to_read(tmp_path: Path) -> None:
    key_file = tmp_path / "id"
    result = qssh("keygen", "-t", "mldsa-65", "-f", str(key_file), "-N", "pw", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_private_key(key_file, "pw").get_algorithm() == "ssh-mldsa-65"


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    key_file = tmp_path / "id"
    assert qssh("keygen", "-f", str(key_file), home=tmp_path).returncode == 0
    before = key_file.read_bytes()
    refused = qssh("keygen", "-f", str(key_file), home=tmp_path)
    assert refused.returncode == 1
    assert "already exists; use --force" in refused.stderr
    assert key_file.read_bytes() == before
    forced = qssh("keygen", "-f", str(key_file), "--force", home=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert key_file.read_bytes() != before
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_keygen_defaults_to_falcon512_under_home_qssh(tmp_path: Path) -> None:
    result = qssh("keygen", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".qssh" / "id_falcon512.pub").read_text().startswith("ssh-falcon512 ")


def test_keygen_rejects_unknown_and_classical_algorithms(tmp_path: Path) -> None:
    for alg in ("ssh-ed25519", "rsa"):
        result = qssh("keygen", "-t", alg, "-f", str(tmp_path / "id"), home=tmp_path)
        assert result.returncode == 1
        assert f"unknown key algorithm {alg!r}" in result.stderr
    assert not (tmp_path / "id").exists()


def test_doctor_json_lists_every_algorithm_provider_and_kex(tmp_path: Path) -> None:
    result = qssh("doctor", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    by_name = {s["ssh_name"]: s for s in report["signatures"]}
    expected = ["ssh-falcon512", "ssh-falcon1024", "ssh-mldsa-44", "ssh-mldsa-65", "ssh-mldsa-87",
                "ssh-sphincssha2128fsimple", "ssh-sphincssha2256fsimple"]  # fmt: skip
    for name in expected:
        assert by_name[name]["available"] is True
        assert by_name[name]["provider"] in ("liboqs", "pqclean")
        assert by_name[name]["provider_version"]
        assert by_name[name]["registered_with_asyncssh"] is True
    kex = {k["algorithm"]: k for k in report["kex"]}
    assert kex["mlkem768x25519-sha256"]["available"] is True
    assert kex["mlkem1024nistp384-sha384"]["available"] is True
    if report["liboqs"]["library"] is None:
        assert report["liboqs"]["reason"] == "liboqs shared library not present"
        assert kex["sntrup761x25519-sha512@openssh.com"]["available"] is False
        assert by_name["ssh-slh-dsa-sha2-128f"]["available"] is False


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_doctor_never_imports_oqs_without_the_library(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    env = child_env(HOME=str(tmp_path))
    code = (
        "import sys; from sidecar.cli import main; rc = main(['doctor', *sys.argv[1:]]);"
        "from transport.crypto import liboqs;"
        "assert liboqs.available() or 'oqs' not in sys.modules; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                            text=True, env=env, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    if not args:
        assert "ssh-falcon512" in result.stdout
        assert "mlkem768x25519-sha256" in result.stdout
