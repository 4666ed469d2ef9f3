"""asyncssh key algorithms: registration, wire forms, and signature checks at the SSH layer."""

from __future__ import annotations

import base64

import asyncssh
import pytest
from asyncssh.kex import _kex_handlers
from asyncssh.packet import SSHPacket, String
from hypothesis import given, settings
from hypothesis import strategies as st

from transport import ssh_algorithms
from transport.crypto import available_kex, available_schemes
from transport.ssh_algorithms import PQSSHKey, key_class, register, registered_algorithms

DATA = b"session id || userauth request"
FAST_ALGS = [s.spec.ssh_name for s in available_schemes() if not s.spec.slow_signer]
ALL_ALGS = registered_algorithms()
_FALCON = key_class("ssh-falcon512").generate(b"")


@pytest.fixture(scope="module", params=ALL_ALGS)
def signed(request: pytest.FixtureRequest) -> tuple[PQSSHKey, bytes]:
    key = key_class(request.param).generate(b"")
    return key, key.sign(DATA, key.algorithm)


def test_expected_algorithms_are_registered_with_asyncssh() -> None:
    expected = {
        "ssh-falcon512",
        "ssh-falcon1024",
        "ssh-mldsa-44",
        "ssh-mldsa-65",
        "ssh-mldsa-87",
        "ssh-sphincssha2128fsimple",
        "ssh-sphincssha2256fsimple",
    }
    assert expected <= set(ALL_ALGS)
    public_key_algs = {a.decode() for a in asyncssh.public_key.get_public_key_algs()}
    assert expected <= public_key_algs


def test_registration_is_idempotent() -> None:
    before = list(asyncssh.public_key.get_public_key_algs())
    assert register() is register()
    assert ssh_algorithms.register() is register()
    assert asyncssh.public_key.get_public_key_algs() == before
    assert len(set(before)) == len(before)


def test_public_key_blob_is_name_then_raw_key(signed: tuple[PQSSHKey, bytes]) -> None:
    key, _ = signed
    packet = SSHPacket(key.public_data)
    assert packet.get_string() == key.algorithm
    assert packet.get_string() == key.public_key_bytes
    packet.check_end()
    assert len(key.public_key_bytes) == key.spec.public_key_size


def test_signature_blob_is_name_then_raw_signature(signed: tuple[PQSSHKey, bytes]) -> None:
    key, signature = signed
    packet = SSHPacket(signature)
    assert packet.get_string() == key.algorithm
    raw = packet.get_string()
    packet.check_end()
    assert key.scheme.verify(key.public_key_bytes, DATA, raw)


def test_public_key_alone_verifies(signed: tuple[PQSSHKey, bytes]) -> None:
    key, signature = signed
    public = asyncssh.import_public_key(key.export_public_key())
    assert isinstance(public, PQSSHKey)
    assert public.secret_key_bytes is None
    assert public.verify(DATA, signature) is True
    assert public.verify(DATA + b"x", signature) is False


def _reframe(name: bytes, raw: bytes, trailer: bytes = b"") -> bytes:
    return String(name) + String(raw) + trailer


def test_malformed_signatures_are_rejected_without_raising(signed: tuple[PQSSHKey, bytes]) -> None:
    key, signature = signed
    packet = SSHPacket(signature)
    name, raw = packet.get_string(), packet.get_string()
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x80
    cases = {
        "tampered": _reframe(name, bytes(flipped)),
        "truncated raw signature": _reframe(name, raw[:-1]),
        "truncated blob": signature[:-1],
        "oversize raw signature": _reframe(name, raw + bytes(key.spec.signature_size)),
        "trailing bytes after signature": _reframe(name, raw, b"\x00"),
        "trailing string after signature": _reframe(name, raw, String(b"x")),
        "other algorithm name": _reframe(b"ssh-ed25519", raw),
        "length prefix larger than data": name and String(name) + b"\xff\xff\xff\xff" + raw,
        "empty": b"",
    }
    for label, bad in cases.items():
        assert key.verify(DATA, bad) is False, label


def test_a_signature_of_another_pq_algorithm_is_rejected() -> None:
    falcon = key_class("ssh-falcon512").generate(b"")
    mldsa = key_class("ssh-mldsa-44").generate(b"")
    assert falcon.verify(DATA, mldsa.sign(DATA, mldsa.algorithm)) is False


@pytest.mark.parametrize("alg", FAST_ALGS)
def test_public_key_of_wrong_length_is_refused_on_import(alg: str) -> None:
    key = key_class(alg).generate(b"")
    blob = String(alg.encode()) + String(key.public_key_bytes[:-1])
    line = f"{alg} {base64.b64encode(blob).decode()} short"
    expected = f"Invalid {alg} public key: {key.spec.public_key_size - 1} bytes"
    with pytest.raises(asyncssh.KeyImportError, match=expected):
        asyncssh.import_public_key(line)


def test_public_key_blob_with_trailing_bytes_is_refused() -> None:
    key = key_class("ssh-falcon512").generate(b"")
    with pytest.raises(asyncssh.KeyImportError):
        asyncssh.import_public_key(key.public_data + b"\x00")


def test_sphincs_keys_sign_off_the_event_loop_and_falcon_on_it() -> None:
    assert key_class("ssh-sphincssha2128fsimple").use_executor is True
    assert key_class("ssh-sphincssha2256fsimple").use_executor is True
    assert key_class("ssh-falcon512").use_executor is False


def test_unavailable_algorithm_gives_a_clear_error() -> None:
    with pytest.raises(asyncssh.KeyImportError, match="not available"):
        key_class("ssh-nonexistent")


@settings(max_examples=60, deadline=None)
@given(blob=st.binary(max_size=2000), trailer=st.binary(max_size=8))
def test_ssh_verify_never_raises_on_arbitrary_signature_blobs(blob: bytes, trailer: bytes) -> None:
    key = _FALCON
    assert key.verify(DATA, blob) is False
    assert key.verify(DATA, String(b"ssh-falcon512") + String(blob) + trailer) is False


def test_our_hybrid_kex_names_sign_through_the_offloading_handler() -> None:
    for name in available_kex():
        handler = _kex_handlers[name.encode()][0]
        assert handler.__name__ == "_OffloadedSigningHybridKex", name
