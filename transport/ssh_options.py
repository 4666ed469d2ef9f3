"""The algorithm set for a connection at a tier, for server and client alike.

Both ends build their asyncssh options from :func:`connection_policy`, so they
cannot drift apart. Key exchange is hybrid only (a post-quantum KEM combined with
ECDH); no classical-only KEX is ever offered, so a client offering only
``curve25519-sha256`` finds no common algorithm and is refused. Host and user
keys are post-quantum only. Tier 2 and above use AES-256-GCM only.

Which host-key (and user-key) algorithms a tier accepts is configuration: pass
``allowed_host_key_algs`` (e.g. :data:`HIGH_ASSURANCE_HOST_KEYS` at tier >= 2) and
``allowed_user_key_algs``. The server applies the host-key restriction to the keys
it presents (:meth:`ConnectionPolicy.select_host_keys`); user keys are matched only
if post-quantum (:class:`transport.keys.PostQuantumAuthorizedKeys`), because
asyncssh's server does not filter user-key algorithms itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import asyncssh

from sidecar.errors import ErrorCode, SidecarError
from transport.crypto import DEFAULT_KEX, available_kex
from transport.ssh_algorithms import canonical_name, registered_algorithms, with_aliases

MIN_TIER = 1
MAX_TIER = 4
HARDENED_TIER = 2

# Falcon-1024 and the hash-based schemes: what an operator may require at tier >= 2.
HIGH_ASSURANCE_HOST_KEYS: tuple[str, ...] = (
    "ssh-falcon1024",
    "ssh-mldsa-87",
    "ssh-sphincssha2256fsimple",
    "ssh-sphincssha2128fsimple",
    "ssh-slh-dsa-sha2-256f",
    "ssh-slh-dsa-sha2-128f",
    "ssh-slh-dsa-sha2-128s",
)

# AEAD ciphers carry their own integrity; MACs apply only to non-AEAD ciphers.
_BASIC_CIPHERS = ("aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")
_HARDENED_CIPHERS = ("aes256-gcm@openssh.com",)
_MACS = ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com")

Role = Literal["client", "server"]


class PolicyError(SidecarError):
    """The requested algorithm policy cannot be met by what is available here."""

    code = ErrorCode.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    tier: int
    kex_algs: tuple[str, ...]
    host_key_algs: tuple[str, ...]
    """Accepted server host-key algorithms, preferred first, each followed by its aliases."""
    user_key_algs: tuple[str, ...]
    """Accepted client (user) key signature algorithms, preferred first, with aliases."""
    encryption_algs: tuple[str, ...]
    mac_algs: tuple[str, ...]
    compression_algs: tuple[str, ...] = ("none",)

    def asyncssh_options(self, role: Role) -> dict[str, object]:
        """Keyword arguments for ``asyncssh.connect`` / ``asyncssh.create_server``."""
        options: dict[str, object] = {
            "kex_algs": list(self.kex_algs),
            "encryption_algs": list(self.encryption_algs),
            "mac_algs": list(self.mac_algs),
            "compression_algs": list(self.compression_algs),
            "signature_algs": list(self.user_key_algs),
        }
        if role == "client":
            options["server_host_key_algs"] = list(self.host_key_algs)
        return options

    def allows_host_key(self, key: asyncssh.SSHKey) -> bool:
        return key.get_algorithm() in self.host_key_algs

    def select_host_keys(self, keys: Iterable[asyncssh.SSHKey]) -> list[asyncssh.SSHKey]:
        """The server's host keys this tier may present; refuse if none is left."""
        keys = list(keys)
        chosen = [k for k in keys if self.allows_host_key(k)]
        if not chosen:
            have = ", ".join(k.get_algorithm() for k in keys) or "none"
            raise PolicyError(
                f"tier {self.tier} accepts host keys {', '.join(self.host_key_algs)}; "
                f"this server has {have}: generate one with `qssh-sidecar keygen -t ALG`"
            )
        return chosen


def _restrict(available: list[str], allowed: Sequence[str] | None, what: str) -> tuple[str, ...]:
    """The allowed algorithms (standard names or aliases), each with its aliases."""
    if allowed is None:
        return tuple(with_aliases(available))
    wanted = dict.fromkeys(canonical_name(a) for a in allowed)
    chosen = [a for a in wanted if a in available]
    if not chosen:
        raise PolicyError(f"none of the allowed {what} algorithms is available here: {allowed}")
    return tuple(with_aliases(chosen))


def connection_policy(
    tier: int,
    *,
    allowed_host_key_algs: Sequence[str] | None = None,
    allowed_user_key_algs: Sequence[str] | None = None,
) -> ConnectionPolicy:
    if not MIN_TIER <= tier <= MAX_TIER:
        raise PolicyError(f"tier must be {MIN_TIER}..{MAX_TIER}, got {tier}")
    kex = available_kex()
    if DEFAULT_KEX not in kex:
        raise PolicyError(f"{DEFAULT_KEX} is not available: cryptography lacks ML-KEM")
    available = registered_algorithms()
    host_keys = _restrict(available, allowed_host_key_algs, "host-key")
    user_keys = _restrict(available, allowed_user_key_algs, "user-key")
    ciphers = _HARDENED_CIPHERS if tier >= HARDENED_TIER else _BASIC_CIPHERS
    return ConnectionPolicy(tier, tuple(kex), host_keys, user_keys, ciphers, _MACS)


def ssh_options_for_tier(
    tier: int,
    role: Role = "client",
    *,
    allowed_host_key_algs: Sequence[str] | None = None,
    allowed_user_key_algs: Sequence[str] | None = None,
) -> dict[str, object]:
    """asyncssh keyword arguments for ``role`` at ``tier`` (see :class:`ConnectionPolicy`)."""
    policy = connection_policy(
        tier,
        allowed_host_key_algs=allowed_host_key_algs,
        allowed_user_key_algs=allowed_user_key_algs,
    )
    return policy.asyncssh_options(role)
