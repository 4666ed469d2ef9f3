"""Signature providers: round trips, stored known answers, length rules, cross-provider bytes."""

from __future__ import annotations

import base64
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa
from hypothesis import given, settings
from hypothesis import strategies as st

from transport.crypto import (
    SIGNATURE_SPECS,
    AlgorithmUnavailable,
    SignatureScheme,
    available_schemes,
    get_scheme,
    liboqs,
    pqclean,
    providers_for,
    statuses,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "signatures.json").read_text())
SCHEMES = available_schemes()
FAST = [s for s in SCHEMES if not s.spec.slow_signer]
MESSAGE = b"exchange hash H"

requires_liboqs = pytest.mark.skipif(not liboqs.available(), reason=liboqs.ABSENT_REASON)


@pytest.fixture(scope="module", params=SCHEMES, ids=lambda s: s.name)
def keyed(request: pytest.FixtureRequest) -> tuple[SignatureScheme, bytes, bytes, bytes]:
    scheme: SignatureScheme = request.param
    public_key, secret_key = scheme.generate_keypair()
    return scheme, public_key, secret_key, scheme.sign(secret_key, MESSAGE)


def test_every_pqclean_algorithm_is_available_without_liboqs() -> None:
    names = {s.name for s in SCHEMES}
    for spec in SIGNATURE_SPECS:
        if spec.pqclean_module is not None:
            assert spec.name in names


def test_slh_dsa_is_unavailable_with_a_reason_when_liboqs_is_absent() -> None:
    if liboqs.available():
        pytest.skip("liboqs is present here")
    slh = [s for s in statuses() if s.spec.ssh_name.startswith("ssh-slh-dsa")]
    assert slh
    for entry in slh:
        assert entry.scheme is None
        assert entry.reason is not None
        assert entry.reason.startswith(liboqs.ABSENT_REASON)
        with pytest.raises(AlgorithmUnavailable, match="liboqs shared library not present"):
            get_scheme(entry.spec.ssh_name)


def test_oqs_module_is_never_imported_without_the_library() -> None:
    if not liboqs.available():
        assert liboqs.version() is None
        assert "oqs" not in sys.modules


def test_registry_prefers_liboqs_where_it_offers_the_algorithm() -> None:
    for spec in SIGNATURE_SPECS:
        providers = providers_for(spec)
        if any(p.provider == liboqs.PROVIDER for p in providers):
            assert get_scheme(spec.name).provider == liboqs.PROVIDER
        elif providers:
            assert get_scheme(spec.name).provider == pqclean.PROVIDER


def test_unknown_algorithm_is_refused_with_a_clear_error() -> None:
    with pytest.raises(AlgorithmUnavailable, match="unknown signature algorithm 'ssh-rsa'"):
        get_scheme("ssh-rsa")


def test_keys_and_signature_have_the_standard_sizes(
    keyed: tuple[SignatureScheme, bytes, bytes, bytes],
) -> None:
    scheme, public_key, secret_key, signature = keyed
    assert len(public_key) == scheme.spec.public_key_size
    assert len(secret_key) == scheme.spec.secret_key_size
    if scheme.spec.variable_signature:
        assert 0 < len(signature) <= scheme.spec.signature_size
    else:
        assert len(signature) == scheme.spec.signature_size


def test_signature_round_trips(keyed: tuple[SignatureScheme, bytes, bytes, bytes]) -> None:
    scheme, public_key, _, signature = keyed
    assert scheme.verify(public_key, MESSAGE, signature) is True


def test_signature_over_another_message_is_rejected(
    keyed: tuple[SignatureScheme, bytes, bytes, bytes],
) -> None:
    scheme, public_key, _, signature = keyed
    assert scheme.verify(public_key, MESSAGE + b"!", signature) is False


def test_signature_under_another_key_is_rejected(
    keyed: tuple[SignatureScheme, bytes, bytes, bytes],
) -> None:
    scheme, _, _, signature = keyed
    other_public, _ = scheme.generate_keypair()
    assert scheme.verify(other_public, MESSAGE, signature) is False


@pytest.mark.parametrize("position", [0, 1, -1], ids=["first", "second", "last"])
def test_tampered_signature_is_rejected(
    keyed: tuple[SignatureScheme, bytes, bytes, bytes], position: int
) -> None:
    scheme, public_key, _, signature = keyed
    tampered = bytearray(signature)
    tampered[position] ^= 0x01
    assert scheme.verify(public_key, MESSAGE, bytes(tampered)) is False


def test_truncated_signature_is_rejected(
    keyed: tuple[SignatureScheme, bytes, bytes, bytes],
) -> None:
    scheme, public_key, _, signature = keyed
    for cut in (1, len(signature) // 2, len(signature) - 1):
        assert scheme.verify(public_key, MESSAGE, signature[:cut]) is False
    assert scheme.verify(public_key, MESSAGE, b"") is False


def test_oversize_and_padded_signatures_are_rejected(
    keyed: tuple[SignatureScheme, bytes, bytes, bytes],
) -> None:
    scheme, public_key, _, signature = keyed
    assert scheme.verify(public_key, MESSAGE, signature + b"\x00") is False
    oversize = signature + bytes(scheme.spec.signature_size + 1 - len(signature))
    assert scheme.verify(public_key, MESSAGE, oversize) is False


def test_public_key_of_wrong_length_is_rejected_without_raising(
    keyed: tuple[SignatureScheme, bytes, bytes, bytes],
) -> None:
    scheme, public_key, _, signature = keyed
    assert scheme.verify(public_key[:-1], MESSAGE, signature) is False
    assert scheme.verify(public_key + b"\x00", MESSAGE, signature) is False


def test_signing_with_a_secret_key_of_wrong_length_raises(
    keyed: tuple[SignatureScheme, bytes, bytes, bytes],
) -> None:
    scheme, _, secret_key, _ = keyed
    with pytest.raises(ValueError, match="secret key must be"):
        scheme.sign(secret_key[:-1], MESSAGE)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_stored_known_answer_vector_verifies(name: str) -> None:
    vector = VECTORS[name]
    scheme = get_scheme(name)
    public_key = base64.b64decode(vector["public_key"])
    message = base64.b64decode(vector["message"])
    signature = base64.b64decode(vector["signature"])
    assert scheme.verify(public_key, message, signature) is True
    assert scheme.verify(public_key, message[:-1], signature) is False


@settings(max_examples=25, deadline=None)
@given(garbage=st.binary(min_size=0, max_size=3000), message=st.binary(max_size=64))
def test_verify_never_raises_on_arbitrary_bytes(garbage: bytes, message: bytes) -> None:
    for scheme in FAST:
        public_key = garbage[: scheme.spec.public_key_size].ljust(scheme.spec.public_key_size)
        assert scheme.verify(public_key, message, garbage) is False
        assert scheme.verify(garbage, message, garbage) is False


# --- cross-provider: the same bytes must work in every implementation -------------

_MLDSA_OPENSSL: dict[str, tuple[Any, Any]] = {
    "ML-DSA-44": (mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey),
    "ML-DSA-65": (mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey),
    "ML-DSA-87": (mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey),
}


@pytest.mark.parametrize("name", sorted(_MLDSA_OPENSSL))
def test_mldsa_signatures_verify_in_openssl_and_back(name: str) -> None:
    """PQClean ML-DSA is FIPS 204 with an empty context, as draft-sfluhrer-ssh-mldsa needs."""
    private_cls, public_cls = _MLDSA_OPENSSL[name]
    ours = get_scheme(name)
    public_key, secret_key = ours.generate_keypair()
    public_cls.from_public_bytes(public_key).verify(ours.sign(secret_key, MESSAGE), MESSAGE)
    with pytest.raises(InvalidSignature):
        public_cls.from_public_bytes(public_key).verify(
            ours.sign(secret_key, MESSAGE), MESSAGE, b"ctx"
        )
    openssl_key = private_cls.generate()
    openssl_public = openssl_key.public_key().public_bytes_raw()
    assert ours.verify(openssl_public, MESSAGE, openssl_key.sign(MESSAGE)) is True
    assert ours.verify(openssl_public, MESSAGE, openssl_key.sign(MESSAGE, b"ctx")) is False


@requires_liboqs
@pytest.mark.parametrize(
    "name", ["Falcon-512", "Falcon-1024", "ML-DSA-44", "ML-DSA-65", "ML-DSA-87"]
)
def test_liboqs_and_pqclean_keys_and_signatures_interoperate(name: str) -> None:
    spec = next(s for s in SIGNATURE_SPECS if s.name == name)
    oqs_scheme = liboqs.load(spec)
    clean_scheme = pqclean.load(spec)
    if oqs_scheme is None or clean_scheme is None:
        pytest.skip(f"{name} is not enabled in the loaded liboqs")
    for signer, verifier in ((oqs_scheme, clean_scheme), (clean_scheme, oqs_scheme)):
        public_key, secret_key = signer.generate_keypair()
        signature = signer.sign(secret_key, MESSAGE)
        assert verifier.verify(public_key, MESSAGE, signature) is True
        # the secret key bytes are interchangeable too
        assert signer.verify(public_key, MESSAGE, verifier.sign(secret_key, MESSAGE)) is True


@requires_liboqs
def test_liboqs_verifies_the_stored_pqclean_vectors() -> None:
    for name, vector in VECTORS.items():
        spec = next(s for s in SIGNATURE_SPECS if s.name == name)
        scheme = liboqs.load(spec)
        if scheme is None:
            continue
        assert scheme.verify(
            base64.b64decode(vector["public_key"]),
            base64.b64decode(vector["message"]),
            base64.b64decode(vector["signature"]),
        )


@pytest.mark.parametrize("scheme", FAST, ids=lambda s: s.name)
def test_signatures_are_detached_not_signed_messages(scheme: SignatureScheme) -> None:
    public_key, secret_key = scheme.generate_keypair()
    long_message = bytes(range(256)) * 40  # 10 KiB: larger than any signature here
    signature = scheme.sign(secret_key, long_message)
    assert len(signature) <= scheme.spec.signature_size
    assert long_message not in signature
    assert scheme.verify(public_key, long_message, signature) is True


def _probe_liboqs(env_home: Path, install: Path) -> dict[str, object]:
    """Run the detection in a fresh interpreter with the given search locations."""
    code = (
        "import json, sys\n"
        "from transport.crypto import liboqs\n"
        "s = liboqs.status()\n"
        "print(json.dumps({'library': str(s.library) if s.library else None,"
        " 'error': s.error, 'oqs_imported': 'oqs' in sys.modules,"
        " 'version': liboqs.version()}))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "HOME": str(env_home),
        "OQS_INSTALL_PATH": str(install),
    }
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=60, check=True)  # fmt: skip
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


@pytest.mark.skipif(liboqs.available(), reason="a real liboqs is installed here")
def test_a_file_named_liboqs_that_is_not_liboqs_is_not_used(tmp_path: Path) -> None:
    libz = ctypes.util.find_library("z")
    if libz is None:
        pytest.skip("no zlib shared library to stand in for a wrong liboqs.so")
    install = tmp_path / "oqs"
    (install / "lib").mkdir(parents=True)
    dirs = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib")
    resolved = next((Path(d) / libz for d in dirs if (Path(d) / libz).exists()), None)
    if resolved is None:
        pytest.skip(f"cannot locate {libz} on disk to stand in for a wrong liboqs.so")
    shutil.copy(resolved, install / "lib" / "liboqs.so")
    (install / "lib64").mkdir()
    (install / "lib64" / "liboqs.so").write_bytes(b"not an ELF file")
    probe = _probe_liboqs(tmp_path, install)
    assert probe["library"] is None
    assert probe["oqs_imported"] is False
    assert probe["version"] is None
    error = str(probe["error"])
    assert error.startswith("liboqs shared library not present")
    assert "lib/liboqs.so: not liboqs" in error
    assert "lib64/liboqs.so" in error


@pytest.mark.skipif(liboqs.available(), reason="a real liboqs is installed here")
def test_no_liboqs_anywhere_means_pqclean_only_and_no_oqs_import(tmp_path: Path) -> None:
    probe = _probe_liboqs(tmp_path, tmp_path / "nowhere")
    assert probe == {
        "library": None,
        "error": "liboqs shared library not present",
        "oqs_imported": False,
        "version": None,
    }
