"""Randomness for keys and nonces: OS randomness, mixed with QRNG output when present.

Tier 3 (SPEC §6.1) mixes health-tested QRNG bytes into key material; it never replaces
the operating system's generator. :class:`EntropyMixer` draws 32 bytes from
``os.urandom`` and, when a QRNG reader is set, 32 bytes from it, and runs both through
HKDF-SHA-256 (``cryptography``). If either input is good the output is: the QRNG adds,
it cannot take away. A QRNG read that fails (health test, timeout, unplugged) is
reported once per failure through ``on_failure`` (called in the reading thread) and the
mixer goes on with OS randomness only until :meth:`EntropyMixer.set_qrng` gives it a
reader again; the caller learns it from :attr:`EntropyMixer.qrng_failures`. The daemon
wires ``on_failure`` to its entropy publisher, which treats it as its own read failing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

INPUT_BYTES = 32
QrngRead = Callable[[int], bytes]


class EntropyMixer:
    """``random_bytes(n, label)``: HKDF(os.urandom(32) || qrng(32)), labelled per use."""

    def __init__(
        self,
        qrng: QrngRead | None = None,
        *,
        source: str = "",
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None:
        self._qrng = qrng
        self.source = source
        self._on_failure = on_failure
        self.mixed = 0  # outputs that had QRNG input
        self.os_only = 0  # outputs from OS randomness alone
        self.qrng_failures = 0

    @property
    def has_qrng(self) -> bool:
        return self._qrng is not None

    def set_qrng(self, qrng: QrngRead | None, source: str = "") -> None:
        self._qrng = qrng
        self.source = source

    def random_bytes(self, n: int, label: str) -> bytes:
        """``n`` bytes for ``label`` (e.g. "tier4 server nonce"); blocking when a QRNG is set."""
        if not 0 < n <= 255 * 32:
            raise ValueError(f"cannot derive {n} bytes")
        ikm = os.urandom(INPUT_BYTES)
        qrng = self._qrng
        if qrng is not None:
            try:
                extra = qrng(INPUT_BYTES)
            except Exception as exc:
                self.qrng_failures += 1
                if self._qrng is qrng:  # not a reader set again meanwhile
                    self._qrng = None
                log.warning(
                    "QRNG %s failed, OS randomness only until a reader is set again: %s",
                    self.source,
                    exc,
                )
                if self._on_failure is not None:
                    self._on_failure(exc)
            else:
                if len(extra) != INPUT_BYTES:
                    raise ValueError("QRNG returned a short read")
                ikm += extra
        if len(ikm) > INPUT_BYTES:
            self.mixed += 1
        else:
            self.os_only += 1
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=n,
            salt=None,
            info=b"qssh-sidecar entropy mix v1|" + label.encode(),
        )
        return hkdf.derive(ikm)


OS_ONLY = EntropyMixer()
