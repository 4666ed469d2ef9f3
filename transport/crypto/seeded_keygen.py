"""Key generation from a caller's seed, for every algorithm that has one.

This is how tier 3 brings QRNG output into host and user keys (SPEC §6.1): the seed
is ``EntropyMixer.random_bytes`` — HKDF over OS randomness and health-tested QRNG
bytes — and the key pair is the one the algorithm's own key generation makes from
that seed. Each family is served by the library that exposes its seeded form:

* ML-DSA — ``cryptography`` (FIPS 204 ξ, 32 bytes); the key is stored as its seed
  (:mod:`transport.crypto.seeded`).
* Falcon, SPHINCS+ — PQClean through ``pqcrypto`` (:mod:`transport.crypto.pqclean_seeded`);
  the key is stored in PQClean's expanded form, like any other.

SLH-DSA (liboqs only) has no seeded form here and is generated with the provider's
own randomness.
"""

from __future__ import annotations

from transport.crypto import pqclean_seeded, seeded
from transport.crypto.algorithms import SignatureSpec
from transport.crypto.pqclean_seeded import SeededKeygenUnavailable


def seed_size(spec: SignatureSpec) -> int | None:
    """Bytes of seed a key of ``spec`` is made from, or None without a seeded form."""
    if seeded.has_seed_form(spec.ssh_name):
        return seeded.SEED_BYTES
    return pqclean_seeded.seed_size(spec)


def keypair_from_seed(spec: SignatureSpec, seed: bytes) -> tuple[bytes, bytes]:
    """``(public_key, secret_key)`` as this product stores them (ML-DSA: the seed)."""
    if seeded.has_seed_form(spec.ssh_name):
        return seeded.public_from_seed(spec.ssh_name, seed), seed
    return expanded_keypair(spec, seed)


def expanded_keypair(spec: SignatureSpec, seed: bytes) -> tuple[bytes, bytes]:
    """Falcon / SPHINCS+ key pair in PQClean's formats, determined by ``seed``."""
    if seeded.has_seed_form(spec.ssh_name):
        raise SeededKeygenUnavailable(f"{spec.name} keys from a seed are kept in seed form")
    return pqclean_seeded.keypair(spec, seed)
