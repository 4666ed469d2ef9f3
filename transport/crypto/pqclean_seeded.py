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
from typing import Any

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


_Ctype = Any  # a ctypes type, or None for void


@functools.cache
def _c_function(
    module: str, name: str, restype: _Ctype, argtypes: tuple[_Ctype, ...]
) -> ctypes._NamedFuncPointer:
    """``name`` from the extension module, its C signature declared once."""
    try:
        function: ctypes._NamedFuncPointer = getattr(_library(module), name)
    except AttributeError:
        raise SeededKeygenUnavailable(f"PQClean symbol {name} is not exported") from None
    function.restype = restype
    function.argtypes = argtypes
    return function


@functools.cache
def seed_size(spec: SignatureSpec) -> int | None:
    """Seed length for ``spec`` through PQClean, or None when it has no seeded form."""
    if spec.pqclean_module is None:
        return None
    if spec.family is Family.FALCON and spec.pqclean_module in _FALCON_LOGN:
        return FALCON_SEED_BYTES
    if spec.family is Family.SPHINCS:
        name = _prefix(spec) + "crypto_sign_seedbytes"
        return int(_c_function(spec.pqclean_module, name, ctypes.c_size_t, ())())
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
    keypair = _c_function(
        spec.pqclean_module,
        _prefix(spec) + "crypto_sign_seed_keypair",
        ctypes.c_int,
        (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p),
    )
    pk = ctypes.create_string_buffer(spec.public_key_size)
    sk = ctypes.create_string_buffer(spec.secret_key_size)
    if keypair(pk, sk, seed) != 0:
        raise RuntimeError(f"PQClean {spec.name} seeded key generation failed")
    return pk.raw, sk.raw


def falcon_keypair(spec: SignatureSpec, seed: bytes) -> tuple[bytes, bytes]:
    """PQClean's Falcon ``crypto_sign_keypair`` with ``seed`` in place of randombytes."""
    _check_seed(spec, seed)
    assert spec.pqclean_module is not None
    module, prefix = spec.pqclean_module, _prefix(spec)
    logn = _FALCON_LOGN[module]
    n = 1 << logn
    ptr, size, uint = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint
    shake_init = _c_function(module, "shake256_inc_init", None, (ptr,))
    shake_absorb = _c_function(module, "shake256_inc_absorb", None, (ptr, ctypes.c_char_p, size))
    shake_finalize = _c_function(module, "shake256_inc_finalize", None, (ptr,))
    shake_release = _c_function(module, "shake256_inc_ctx_release", None, (ptr,))
    keygen = _c_function(module, prefix + "keygen", None, (ptr,) * 6 + (uint, ptr))
    rng = (ctypes.c_uint64 * _SHAKE_CTX_WORDS)()
    f, g, big_f = ((ctypes.c_int8 * n)() for _ in range(3))
    h = (ctypes.c_uint16 * n)()
    tmp = (ctypes.c_uint64 * (_FALCON_KEYGEN_TEMP[logn] // 8))()  # 8-byte aligned, as in C
    try:
        shake_init(rng)
        try:
            shake_absorb(rng, seed, len(seed))
            shake_finalize(rng)
            keygen(rng, f, g, big_f, None, h, logn, tmp)
        finally:
            shake_release(rng)
        return _falcon_encode(spec, logn, (f, g, big_f), h)
    finally:
        for secret in (f, g, big_f, tmp):  # the private polynomials: do not leave them about
            ctypes.memset(secret, 0, ctypes.sizeof(secret))


_I8Poly = ctypes.Array[ctypes.c_int8]


def _falcon_encode(
    spec: SignatureSpec,
    logn: int,
    private: tuple[_I8Poly, _I8Poly, _I8Poly],
    h: ctypes.Array[ctypes.c_uint16],
) -> tuple[bytes, bytes]:
    """PQClean's encodings: sk = 0x50+logn ‖ trim_i8(f) ‖ trim_i8(g) ‖ trim_i8(F),
    pk = logn ‖ modq(h)."""
    assert spec.pqclean_module is not None
    module, prefix = spec.pqclean_module, _prefix(spec)
    library = _library(module)
    max_fg_bits = (ctypes.c_uint8 * 11).in_dll(library, prefix + "max_fg_bits")
    max_big_fg_bits = (ctypes.c_uint8 * 11).in_dll(library, prefix + "max_FG_bits")
    f, g, big_f = private
    ptr, size, uint = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint
    trim_i8_encode = _c_function(
        module, prefix + "trim_i8_encode", size, (ptr, size, ptr, uint, uint)
    )
    modq_encode = _c_function(module, prefix + "modq_encode", size, (ptr, size, ptr, uint))
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
