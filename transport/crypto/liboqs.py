"""liboqs through liboqs-python, used only when the shared library loads.

Importing ``oqs`` when the library is missing makes liboqs-python git-clone and
build liboqs. So this module first looks for the library itself, in exactly the
places liboqs-python searches (the system loader path, ``$OQS_INSTALL_PATH`` or
``~/_oqs``, ``lib`` and ``lib64``), loads it with ctypes, and imports ``oqs`` only
after that succeeded. Nothing here can reach the network.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib.metadata
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from transport.crypto.algorithms import SignatureSpec
from transport.crypto.errors import ProviderMismatch
from transport.crypto.scheme import SignatureScheme

PROVIDER = "liboqs"
ABSENT_REASON = "liboqs shared library not present"
# liboqs-python calls these at import; a file lacking them is not liboqs.
_REQUIRED_SYMBOLS = ("OQS_init", "OQS_version", "OQS_SIG_new")
_OQS_LOGGER = "oqs.oqs"


@dataclass(frozen=True, slots=True)
class LiboqsStatus:
    library: Path | None
    """The shared library that loaded, or None."""
    error: str | None
    """Why liboqs is not used, when it is not."""


def _candidates() -> list[Path]:
    found: list[Path] = []
    for name in ("oqs", "liboqs"):
        located = ctypes.util.find_library(name)
        if located:
            found.append(Path(located))
    install = Path(os.environ.get("OQS_INSTALL_PATH", Path.home() / "_oqs"))
    found.extend(install / sub / "liboqs.so" for sub in ("lib", "lib64"))
    return found


@functools.cache
def status() -> LiboqsStatus:
    rejected: list[str] = []
    for path in _candidates():
        # find_library returns a bare soname the loader resolves; others must exist.
        if path.is_absolute() and not path.exists():
            continue
        try:
            library = ctypes.CDLL(str(path))
        except OSError as exc:
            rejected.append(f"{path}: {exc}")
            continue
        if not all(hasattr(library, symbol) for symbol in _REQUIRED_SYMBOLS):
            rejected.append(f"{path}: not liboqs (no {'/'.join(_REQUIRED_SYMBOLS)})")
            continue
        return LiboqsStatus(path, None)
    if rejected:
        return LiboqsStatus(None, f"{ABSENT_REASON} ({'; '.join(rejected)})")
    return LiboqsStatus(None, ABSENT_REASON)


def available() -> bool:
    return status().library is not None


LOADER_PATH = "the loader path (ctypes.util.find_library)"


def found_via(library: Path) -> str:
    """How a library from :func:`status` was found: a bare soname came from the loader
    path, an absolute path from ``$OQS_INSTALL_PATH`` (or ``~/_oqs``)."""
    if not library.is_absolute():
        return LOADER_PATH
    return f"OQS_INSTALL_PATH ({library.parent.parent})"


@dataclass(frozen=True, slots=True)
class AsyncsshView:
    """What asyncssh found: it looks only on the loader path, once, at import."""

    library: str | None
    sntrup761: bool


def asyncssh_view() -> AsyncsshView:
    from asyncssh.crypto import pq  # noqa: PLC0415 - asyncssh's own search, already done

    library = getattr(pq, "_oqs_lib", None)
    return AsyncsshView(library if isinstance(library, str) else None, pq.sntrup_available)


def expected_version() -> str | None:
    """The liboqs major.minor the installed liboqs-python expects (its own version's)."""
    try:
        version = importlib.metadata.version("liboqs-python")
    except importlib.metadata.PackageNotFoundError:
        return None
    return ".".join(version.split(".")[:2])


@functools.cache
def _oqs() -> ModuleType | None:
    if not available():
        return None
    # liboqs-python's logger ("oqs.oqs") sets INFO, adds a stdout handler and says
    # "faulthandler is disabled" at import. Our output must not depend on it: the
    # import line goes nowhere, and afterwards only its warnings reach our log.
    library_log = logging.getLogger(_OQS_LOGGER)
    library_log.propagate = False
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import oqs  # noqa: PLC0415 - only after the library was found
    finally:
        for handler in list(library_log.handlers):
            library_log.removeHandler(handler)
        library_log.setLevel(logging.WARNING)
        library_log.propagate = True

    module: ModuleType = oqs
    return module


def version() -> str | None:
    oqs = _oqs()
    if oqs is None:
        return None
    return f"liboqs {oqs.oqs_version()}"


def enabled_signatures() -> frozenset[str]:
    oqs = _oqs()
    if oqs is None:
        return frozenset()
    return frozenset(oqs.get_enabled_sig_mechanisms())


class LiboqsSignature(SignatureScheme):
    provider = PROVIDER

    def __init__(self, spec: SignatureSpec, oqs: ModuleType, lib_version: str) -> None:
        assert spec.liboqs_name is not None
        super().__init__(spec, lib_version)
        self._oqs = oqs
        self._alg = spec.liboqs_name
        with self._new() as sig:
            sizes = (sig.length_public_key, sig.length_secret_key, sig.length_signature)
        if sizes != (spec.public_key_size, spec.secret_key_size, spec.signature_size):
            raise ProviderMismatch(f"liboqs {spec.name} sizes {sizes} differ from the standard")

    def _new(self, secret_key: bytes | None = None) -> Any:
        return self._oqs.Signature(self._alg, secret_key)

    def _generate(self) -> tuple[bytes, bytes]:
        with self._new() as sig:
            public_key = bytes(sig.generate_keypair())
            return public_key, bytes(sig.export_secret_key())

    def _sign(self, secret_key: bytes, message: bytes) -> bytes:
        with self._new(secret_key) as sig:
            return bytes(sig.sign(message))

    def _verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        with self._new() as sig:
            return bool(sig.verify(message, signature, public_key))


def load(spec: SignatureSpec) -> LiboqsSignature | None:
    oqs = _oqs()
    if oqs is None or spec.liboqs_name is None:
        return None
    if spec.liboqs_name not in enabled_signatures():
        return None
    return LiboqsSignature(spec, oqs, version() or "liboqs")
