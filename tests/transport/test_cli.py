"""``qssh-sidecar keygen`` and ``qssh-sidecar doctor`` as real subprocesses."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.subprocesses import child_env
from transport.crypto import liboqs as liboqs_provider
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


def _liboqs_file_on_ld_library_path() -> Path | None:
    """The liboqs this test run sees through LD_LIBRARY_PATH, if that is how it sees one."""
    for directory in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        candidate = Path(directory) / "liboqs.so"
        if directory and candidate.exists():
            return candidate
    return None


def _doctor_json(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sidecar.cli", "doctor", "--json"]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_doctor_says_neither_found_liboqs_and_how_to_install_it(tmp_path: Path) -> None:
    env = child_env(HOME=str(tmp_path), OQS_INSTALL_PATH=str(tmp_path / "nothing"))
    env.pop("LD_LIBRARY_PATH", None)
    if liboqs_provider.status().library is not None and not os.environ.get("LD_LIBRARY_PATH"):
        pytest.skip("liboqs is installed system-wide here: it cannot be hidden from a child")
    result = _doctor_json(env)
    assert result.returncode == 0, result.stderr
    oqs = json.loads(result.stdout)["liboqs"]
    assert oqs["found_by"]["liboqs-python"]["found"] is False
    assert oqs["found_by"]["asyncssh"]["found"] is False
    (fix,) = oqs["fixes"]
    assert "neither liboqs-python nor asyncssh found liboqs" in fix
    assert "-DBUILD_SHARED_LIBS=ON" in fix
    assert "ldconfig" in fix


def test_doctor_says_asyncssh_missed_a_liboqs_only_oqs_install_path_shows(tmp_path: Path) -> None:
    """OQS_INSTALL_PATH alone is enough for liboqs-python but not for asyncssh."""
    library = _liboqs_file_on_ld_library_path()
    if library is None:
        pytest.skip("needs a liboqs made visible through LD_LIBRARY_PATH (docs/crypto.md)")
    env = child_env(HOME=str(tmp_path), OQS_INSTALL_PATH=str(library.parent.parent))
    env.pop("LD_LIBRARY_PATH")
    result = _doctor_json(env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    oqs = report["liboqs"]
    assert oqs["found_by"]["liboqs-python"]["found"] is True
    assert oqs["found_by"]["liboqs-python"]["via"].startswith("OQS_INSTALL_PATH")
    assert oqs["found_by"]["asyncssh"]["found"] is False
    (fix,) = oqs["fixes"]
    assert "asyncssh did not find liboqs" in fix
    assert f"LD_LIBRARY_PATH={library.parent}" in fix
    assert "ldconfig" in fix
    kex = {k["algorithm"]: k for k in report["kex"]}
    for name in ("sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com"):
        assert kex[name]["available"] is False
        assert "asyncssh did not find liboqs" in kex[name]["reason"]
    # and made visible to both, nothing is left to fix
    both = qssh("doctor", "--json", home=tmp_path)
    oqs = json.loads(both.stdout)["liboqs"]
    assert oqs["found_by"]["asyncssh"]["found"] is True
    assert oqs["found_by"]["asyncssh"]["sntrup761"] is True
    assert oqs["fixes"] == []
