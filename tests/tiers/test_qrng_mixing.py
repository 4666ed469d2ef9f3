"""Tier 3: health-tested QRNG bytes mixed (HKDF, never replacing OS randomness) into
key generation (ML-DSA, Falcon, SPHINCS+) and tier-4 nonces, from a real pty QRNG
simulator."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hardware.errors import HealthTestFailure
from hardware.health import HealthTest
from hardware.monitor import HealthCheckedSource
from hardware.simulators.serial_qrng import Behaviour, SerialQRNGSimulator
from hardware.sources import SerialSource
from tests.service.conftest import Keys
from tests.subprocesses import child_env
from tests.tiers.conftest import start_tier_service, stop_tier_service
from transport.client import QueueClient
from transport.crypto import get_scheme, seeded_keygen
from transport.entropy import EntropyMixer
from transport.keys import check_key_pair, generate_key, read_private_key, write_key_pair


@pytest.fixture
def qrng() -> Iterator[tuple[SerialQRNGSimulator, HealthCheckedSource]]:
    sim = SerialQRNGSimulator("good")
    sim.start()
    source = HealthCheckedSource(SerialSource(sim.path), HealthTest(), timeout=5.0)
    try:
        yield sim, source
    finally:
        source.close()
        sim.stop()


def test_qrng_bytes_are_mixed_with_os_randomness(
    qrng: tuple[SerialQRNGSimulator, HealthCheckedSource],
) -> None:
    _, source = qrng
    mixer = EntropyMixer(source.read, source="sim")
    outputs = {mixer.random_bytes(32, "test") for _ in range(8)}
    assert len(outputs) == 8
    assert (mixer.mixed, mixer.os_only) == (8, 0)
    assert source.test.counts.samples == 8 * 32  # every QRNG byte went through the tests


def test_a_qrng_failing_its_health_test_leaves_os_randomness_only(
    qrng: tuple[SerialQRNGSimulator, HealthCheckedSource],
) -> None:
    sim, source = qrng
    failures: list[Exception] = []
    mixer = EntropyMixer(source.read, source="sim", on_failure=failures.append)
    mixer.random_bytes(32, "before")
    sim.behaviour = Behaviour.STUCK
    for _ in range(1000):  # drain the good bytes already in the pty buffer
        if mixer.qrng_failures:
            break
        mixer.random_bytes(32, "while stuck")
    assert mixer.qrng_failures == 1
    assert isinstance(failures[0], HealthTestFailure)
    assert not mixer.has_qrng
    assert len(mixer.random_bytes(32, "after")) == 32
    assert mixer.os_only >= 2
    with pytest.raises(HealthTestFailure):
        source.read(32)  # stuck bytes are never handed out


def test_mldsa_keys_are_generated_from_a_qrng_mixed_seed_and_interoperate(
    qrng: tuple[SerialQRNGSimulator, HealthCheckedSource], tmp_path: Path
) -> None:
    _, source = qrng
    mixer = EntropyMixer(source.read, source="sim")
    key = generate_key("ssh-mldsa-65", "qrng", entropy=mixer)
    assert key.seeded
    assert mixer.mixed == 1
    scheme = get_scheme("ssh-mldsa-65")
    assert len(key.public_key_bytes) == scheme.spec.public_key_size
    signature = key.sign(b"block 7", b"ssh-mldsa-65")  # the SSH signature blob
    raw = key.sign_ssh(b"block 7", b"ssh-mldsa-65")[4:]
    assert scheme.verify(key.public_key_bytes, b"block 7", raw)  # PQClean verifies it
    assert key.verify(b"block 7", signature)
    private_path, _ = write_key_pair(key, tmp_path / "id_mldsa65")
    again = read_private_key(private_path)
    assert again.public_key_bytes == key.public_key_bytes


@pytest.mark.parametrize(
    "algorithm", ["ssh-falcon512", "ssh-falcon1024", "ssh-sphincssha2128fsimple"]
)
def test_falcon_and_sphincs_keys_are_made_from_a_qrng_mixed_seed(
    qrng: tuple[SerialQRNGSimulator, HealthCheckedSource], algorithm: str, tmp_path: Path
) -> None:
    _, source = qrng
    samples_before = source.test.counts.samples
    mixer = EntropyMixer(source.read, source="sim")
    key = generate_key(algorithm, "qrng", entropy=mixer)
    assert (mixer.mixed, mixer.os_only) == (1, 0)
    assert source.test.counts.samples == samples_before + 32  # health-tested QRNG bytes
    assert check_key_pair(key)
    raw = key.sign_ssh(b"block 7", algorithm.encode())[4:]
    assert get_scheme(algorithm).verify(key.public_key_bytes, b"block 7", raw)
    private_path, _ = write_key_pair(key, tmp_path / "id")
    assert read_private_key(private_path).public_key_bytes == key.public_key_bytes


@pytest.mark.parametrize(
    "algorithm", ["ssh-falcon512", "ssh-sphincssha2256fsimple", "ssh-mldsa-44"]
)
def test_the_key_is_determined_by_both_os_and_qrng_bytes(
    algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is exactly the seeded key pair of HKDF(os || qrng): the QRNG bytes reach
    the key, and the OS bytes still count (the QRNG adds, it never replaces)."""
    import transport.entropy as entropy_module  # noqa: PLC0415 - patched below

    os_bytes = [b"\x11" * 32]
    monkeypatch.setattr(entropy_module.os, "urandom", lambda n: os_bytes[0][:n])

    def key_with(os_value: bytes, qrng_value: bytes) -> bytes:
        os_bytes[0] = os_value
        mixer = EntropyMixer(lambda n: qrng_value[:n], source="fixed")
        return generate_key(algorithm, entropy=mixer).public_key_bytes

    spec = get_scheme(algorithm).spec
    size = seeded_keygen.seed_size(spec)
    assert size is not None
    seed = HKDF(
        algorithm=hashes.SHA256(),
        length=size,
        salt=None,
        info=f"qssh-sidecar entropy mix v1|keygen {algorithm}".encode(),
    ).derive(b"\x11" * 32 + b"\x22" * 32)
    reference = key_with(b"\x11" * 32, b"\x22" * 32)
    assert reference == seeded_keygen.keypair_from_seed(spec, seed)[0]
    assert key_with(b"\x11" * 32, b"\x23" * 32) != reference  # another QRNG draw
    assert key_with(b"\x12" * 32, b"\x22" * 32) != reference  # another OS draw


async def test_a_qrng_seeded_mldsa_user_key_logs_in_over_ssh(
    qrng: tuple[SerialQRNGSimulator, HealthCheckedSource], tmp_path: Path, keys: Keys
) -> None:
    _, source = qrng
    user = generate_key("ssh-mldsa-65", entropy=EntropyMixer(source.read))
    svc = await start_tier_service(tmp_path, keys, node=2)
    public = user.export_public_key().decode().split()
    with (tmp_path / "authorized_keys").open("a") as f:
        f.write(f'roles="producer,admin" {public[0]} {public[1]} seeded\n')
    try:
        async with QueueClient.connect(
            "127.0.0.1",
            svc.port,
            username="seeded",
            client_keys=[user],
            known_hosts=svc.known_hosts,
        ) as c:
            pong = await c.ping()
            assert pong["user"] == "seeded"
    finally:
        await stop_tier_service(svc)


def _keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "keygen", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keygen_mixes_a_healthy_qrng_into_an_mldsa_key(tmp_path: Path) -> None:
    with SerialQRNGSimulator("good") as sim:
        r = _keygen("-t", "ssh-mldsa-65", "-f", str(tmp_path / "k"), "--qrng", sim.path)
    assert r.returncode == 0, r.stderr
    assert "health-tested QRNG" in r.stdout
    assert read_private_key(tmp_path / "k").seeded


def test_keygen_refuses_a_stuck_qrng_and_writes_nothing(tmp_path: Path) -> None:
    with SerialQRNGSimulator("stuck") as sim:
        r = _keygen("-t", "ssh-mldsa-65", "-f", str(tmp_path / "k"), "--qrng", sim.path)
    assert r.returncode == 1
    assert "is not usable" in r.stderr
    assert "health test failed" in r.stderr
    assert not (tmp_path / "k").exists()


def test_keygen_mixes_a_healthy_qrng_into_a_falcon_key(tmp_path: Path) -> None:
    with SerialQRNGSimulator("good") as sim:
        r = _keygen("-t", "ssh-falcon1024", "-f", str(tmp_path / "k"), "--qrng", sim.path)
    assert r.returncode == 0, r.stderr
    assert "health-tested QRNG" in r.stdout
    key = read_private_key(tmp_path / "k")
    assert key.get_algorithm() == "ssh-falcon1024"
    assert check_key_pair(key)
