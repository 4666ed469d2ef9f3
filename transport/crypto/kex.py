"""Hybrid key exchange: which of ours asyncssh can run here, and through what.

asyncssh implements the KEX itself (ML-KEM through ``cryptography``/OpenSSL,
sntrup761 only through liboqs); this module only decides which names we allow.
Classical-only key exchange is never in these lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncssh.kex import get_kex_algs

from transport.crypto import liboqs

DEFAULT_KEX = "mlkem768x25519-sha256"

# Ours, in preference order. Each combines a post-quantum KEM with an ECDH.
HYBRID_KEX: tuple[str, ...] = (
    "mlkem768x25519-sha256",
    "mlkem1024nistp384-sha384",
    # OpenSSH 9.9 offers the standard name beside the older @openssh.com one.
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
)

_KEX_PROVIDER = {
    "mlkem768x25519-sha256": "cryptography (OpenSSL ML-KEM) + X25519",
    "mlkem1024nistp384-sha384": "cryptography (OpenSSL ML-KEM) + ECDH P-384",
    "sntrup761x25519-sha512": "liboqs sntrup761 + X25519",
    "sntrup761x25519-sha512@openssh.com": "liboqs sntrup761 + X25519",
}


@dataclass(frozen=True, slots=True)
class KexStatus:
    name: str
    available: bool
    provider: str
    reason: str | None


def kex_statuses() -> list[KexStatus]:
    registered = {alg.decode() for alg in get_kex_algs()}
    result = []
    for name in HYBRID_KEX:
        if name.startswith("sntrup") and not liboqs.available():
            reason = liboqs.status().error or liboqs.ABSENT_REASON
            result.append(KexStatus(name, False, _KEX_PROVIDER[name], reason))
        elif name.startswith("sntrup") and liboqs.asyncssh_view().library is None:
            # liboqs-python found it through OQS_INSTALL_PATH; asyncssh looks only here
            reason = f"asyncssh did not find liboqs on {liboqs.LOADER_PATH}"
            result.append(KexStatus(name, False, _KEX_PROVIDER[name], reason))
        elif name not in registered:
            result.append(KexStatus(name, False, _KEX_PROVIDER[name], "not offered by asyncssh"))
        else:
            result.append(KexStatus(name, True, _KEX_PROVIDER[name], None))
    return result


def available_kex() -> list[str]:
    return [k.name for k in kex_statuses() if k.available]
