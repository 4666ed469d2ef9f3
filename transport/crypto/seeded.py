"""ML-DSA keys held as their 32-byte seed (FIPS 204 ξ), through ``cryptography``.

PQClean exports no seeded ML-DSA key generation; ``cryptography`` builds an ML-DSA
key from a seed (``MLDSA65PrivateKey.from_seed_bytes``). The public key is the one
PQClean's ``crypto_sign_keypair()`` makes from the same ξ, byte for byte, and its
signatures verify with every provider (``tests/transport/test_seeded_keygen.py``).
:mod:`transport.crypto.seeded_keygen` uses it when a key is made from a QRNG-mixed seed.

A seeded private key is stored as ``string(public key) || string(32-byte seed)``
in ``openssh-key-v1`` (instead of PQClean's expanded secret key); public keys and
signatures on the wire are unchanged.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import mldsa

SEED_BYTES = 32

_Private = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey

_CLASSES: dict[
    str,
    type[mldsa.MLDSA44PrivateKey] | type[mldsa.MLDSA65PrivateKey] | type[mldsa.MLDSA87PrivateKey],
] = {
    "ssh-mldsa-44": mldsa.MLDSA44PrivateKey,
    "ssh-mldsa-65": mldsa.MLDSA65PrivateKey,
    "ssh-mldsa-87": mldsa.MLDSA87PrivateKey,
}


def has_seed_form(ssh_name: str) -> bool:
    return ssh_name in _CLASSES


def _private(ssh_name: str, seed: bytes) -> _Private:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"an {ssh_name} seed is {SEED_BYTES} bytes, got {len(seed)}")
    return _CLASSES[ssh_name].from_seed_bytes(seed)


def public_from_seed(ssh_name: str, seed: bytes) -> bytes:
    return _private(ssh_name, seed).public_key().public_bytes_raw()


def sign_with_seed(ssh_name: str, seed: bytes, message: bytes) -> bytes:
    return _private(ssh_name, seed).sign(message)
