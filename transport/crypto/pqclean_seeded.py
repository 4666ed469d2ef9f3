"""Falcon and SPHINCS+ key pairs from a given seed, computed by PQClean's own code.

PQClean's ``crypto_sign_keypair()`` takes its seed from ``getrandom()`` inside C, so
``pqcrypto`` offers no way to bring QRNG-mixed randomness to a Falcon or SPHINCS+ key.
Both key generations are deterministic functions of a short seed, though, and the
functions that compute them are exported by the very extension modules ``pqcrypto``
loads; this module calls them with the seed given:

* SPHINCS+ — ``crypto_sign_seed_keypair(pk, sk, seed)``, PQClean's public deterministic
  entry point (``crypto_sign_keypair`` is ``randombytes(seed, 3n)`` followed by it).
* Falcon — ``crypto_sign_keypair`` is ``randombytes(seed, 48)``, a SHAKE256 context
  absorbing the seed, ``keygen()``, then the ``trim_i8`` / ``modq`` encodings of f, g,
  F and h. :func:`falcon_keypair` makes exactly those calls in that order.

Nothing cryptographic is reimplemented here: every byte comes from PQClean. The
glue is checked bit for bit against ``crypto_sign_keypair()`` itself, run with a
``getrandom()`` that returns the same seed
(``tests/transport/test_seeded_keygen.py``), so a pqcrypto whose internals moved is
caught by the tests instead of producing wrong keys.
"""

from __future__ import annotations

import ctypes
import functools
import importlib

from transport.crypto.algorithms import Family, SignatureSpec

FALCON_SEED_BYTES = 48
_FALCON_LOGN = {"falcon_512": 9, "falcon_1024": 10}
# FALCON_KEYGEN_TEMP_9 / _10 in PQClean's falcon inner.h.
_FALCON_KEYGEN_TEMP = {9: 14336, 10: 28672}
# shake256incctx is one pointer in PQClean (the state is malloc'd by init and freed by
# release); room for an inline 25-lane state too, so a layout change cannot overrun.
_SHAKE_CTX_WORDS = 32


class SeededKeygenUnavailable(Exception):
    """This build of the algorithm does not export what seeded key generation needs."""


def _prefix(spec: SignatureSpec) -> str:
    assert spec.pqclean_module is not None
    return "PQCLEAN_" + spec.pqclean_module.upper().replace("_", "") + "_CLEAN_"


@functools.cache
def _library(module: str) -> ctypes.CDLL:
    """The extension module pqcrypto already loaded, opened again for its C symbols."""
    extension = importlib.import_module(f"pqcrypto._sign.{module}")
    path = extension.__file__
    if path is None:
        raise SeededKeygenUnavailable(f"pqcrypto._sign.{module} has no file")
    return ctypes.CDLL(path)


def _function(library: ctypes.CDLL, name: str) -> ctypes._NamedFuncPointer:
    try:
        return getattr(library, name)  # type: ignore[no-any-return]
    except AttributeError:
        raise SeededKeygenUnavailable(f"PQClean symbol {name} is not exported") from None


def seed_size(spec: SignatureSpec) -> int | None:
    """Seed length for ``spec`` through PQClean, or None when it has no seeded form."""
    if spec.pqclean_module is None:
        return None
    if spec.family is Family.FALCON and spec.pqclean_module in _FALCON_LOGN:
        return FALCON_SEED_BYTES
    if spec.family is Family.SPHINCS:
        seedbytes = _function(
            _library(spec.pqclean_module), _prefix(spec) + "crypto_sign_seedbytes"
        )
        seedbytes.restype = ctypes.c_size_t
        seedbytes.argtypes = []
        return int(seedbytes())
    return None


def _check_seed(spec: SignatureSpec, seed: bytes) -> None:
    expected = seed_size(spec)
    if expected is None:
        raise SeededKeygenUnavailable(f"{spec.name} has no seeded key generation in PQClean")
    if len(seed) != expected:
        raise ValueError(f"a {spec.name} seed is {expected} bytes, got {len(seed)}")


def sphincs_keypair(spec: SignatureSpec, seed: bytes) -> tuple[bytes, bytes]:
    _check_seed(spec, seed)
    assert spec.pqclean_module is not None
    library = _library(spec.pqclean_module)
    keypair = _function(library, _prefix(spec) + "crypto_sign_seed_keypair")
    keypair.restype = ctypes.c_int
    keypair.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    pk = ctypes.create_string_buffer(spec.public_key_size)
    sk = ctypes.create_string_buffer(spec.secret_key_size)
    if keypair(pk, sk, seed) != 0:
        raise RuntimeError(f"PQClean {spec.name} seeded key generation failed")
    return pk.raw, sk.raw


def falcon_keypair(spec: SignatureSpec, seed: bytes) -> tuple[bytes, bytes]:
    """PQClean's Falcon ``crypto_sign_keypair`` with ``seed`` in place of randombytes."""
    _check_seed(spec, seed)
    assert spec.pqclean_module is not None
    library = _library(spec.pqclean_module)
    prefix = _prefix(spec)
    logn = _FALCON_LOGN[spec.pqclean_module]
    n = 1 << logn

    shake_init = _function(library, "shake256_inc_init")
    shake_absorb = _function(library, "shake256_inc_absorb")
    shake_finalize = _function(library, "shake256_inc_finalize")
    shake_release = _function(library, "shake256_inc_ctx_release")
    keygen = _function(library, prefix + "keygen")
    trim_i8_encode = _function(library, prefix + "trim_i8_encode")
    modq_encode = _function(library, prefix + "modq_encode")
    for fn in (shake_init, shake_finalize, shake_release):
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p]
    shake_absorb.restype = None
    shake_absorb.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    keygen.restype = None
    keygen.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_uint, ctypes.c_void_p]
    trim_i8_encode.restype = ctypes.c_size_t
    trim_i8_encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_uint,
    ]
    modq_encode.restype = ctypes.c_size_t
    modq_encode.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_uint]
    max_fg_bits = (ctypes.c_uint8 * 11).in_dll(library, prefix + "max_fg_bits")
    max_big_fg_bits = (ctypes.c_uint8 * 11).in_dll(library, prefix + "max_FG_bits")

    rng = (ctypes.c_uint64 * _SHAKE_CTX_WORDS)()
    f, g, big_f = ((ctypes.c_int8 * n)() for _ in range(3))
    h = (ctypes.c_uint16 * n)()
    tmp = (ctypes.c_uint64 * (_FALCON_KEYGEN_TEMP[logn] // 8))()  # 8-byte aligned, as in C
    shake_init(rng)
    try:
        shake_absorb(rng, seed, len(seed))
        shake_finalize(rng)
        keygen(rng, f, g, big_f, None, h, logn, tmp)
    finally:
        shake_release(rng)

    sk_size, pk_size = spec.secret_key_size, spec.public_key_size
    sk = (ctypes.c_uint8 * sk_size)()
    sk[0] = 0x50 + logn
    used = 1
    for poly, bits in (
        (f, max_fg_bits[logn]),
        (g, max_fg_bits[logn]),
        (big_f, max_big_fg_bits[logn]),
    ):
        written = trim_i8_encode(ctypes.byref(sk, used), sk_size - used, poly, logn, bits)
        if written == 0:
            raise RuntimeError(f"PQClean {spec.name} secret key encoding failed")
        used += written
    if used != sk_size:
        raise RuntimeError(f"PQClean {spec.name} secret key is {used} bytes, not {sk_size}")
    pk = (ctypes.c_uint8 * pk_size)()
    pk[0] = logn
    if modq_encode(ctypes.byref(pk, 1), pk_size - 1, h, logn) != pk_size - 1:
        raise RuntimeError(f"PQClean {spec.name} public key encoding failed")
    return bytes(pk), bytes(sk)


def keypair(spec: SignatureSpec, seed: bytes) -> tuple[bytes, bytes]:
    """``(public_key, secret_key)`` in PQClean's formats, determined by ``seed``."""
    if spec.family is Family.FALCON:
        return falcon_keypair(spec, seed)
    if spec.family is Family.SPHINCS:
        return sphincs_keypair(spec, seed)
    raise SeededKeygenUnavailable(f"{spec.name} has no seeded key generation in PQClean")
