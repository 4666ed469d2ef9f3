"""SSH algorithm choices shared by the queue server and client, per tier.

Hybrid post-quantum key exchange only (SPEC §5.2): a classical-only peer finds no
common key exchange and is refused during the handshake. When the pq branch's
``ssh_options_for_tier`` is present it decides; this is the fallback with what
asyncssh offers natively.
"""

from __future__ import annotations

import importlib
from typing import Any

PQ_KEX = ("mlkem768x25519-sha256", "mlkem1024nistp384-sha384")
AEAD_CIPHERS = ("aes256-gcm@openssh.com",)
CIPHERS_LOW_TIER = ("aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")


def _pq_options(tier: int) -> dict[str, Any] | None:
    for module_name in ("transport.crypto.ssh_options", "transport.crypto"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        func = getattr(module, "ssh_options_for_tier", None)
        if func is not None:
            return dict(func(tier))
    return None


def algorithm_options(tier: int) -> dict[str, Any]:
    """Keyword arguments for ``asyncssh.connect``/``listen`` (kex, ciphers)."""
    options = _pq_options(tier)
    if options is not None:
        return options
    return {
        "kex_algs": list(PQ_KEX),
        "encryption_algs": list(AEAD_CIPHERS if tier >= 2 else CIPHERS_LOW_TIER),
        "compression_algs": ["none"],
    }
