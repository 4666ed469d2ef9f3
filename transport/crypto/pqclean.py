"""PQClean through ``pqcrypto`` (always available).

``pqcrypto``'s ``sign`` returns a detached signature (``crypto_sign_signature``),
the same bytes liboqs produces, so keys and signatures interoperate.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType
from typing import cast

from transport.crypto.algorithms import SignatureSpec
from transport.crypto.errors import ProviderMismatch
from transport.crypto.scheme import SignatureScheme

PROVIDER = "pqclean"


def version() -> str:
    return f"pqcrypto {importlib.metadata.version('pqcrypto')}"


class PQCleanSignature(SignatureScheme):
    provider = PROVIDER

    def __init__(self, spec: SignatureSpec) -> None:
        assert spec.pqclean_module is not None
        super().__init__(spec, version())
        self._module: ModuleType = importlib.import_module(f"pqcrypto.sign.{spec.pqclean_module}")
        sizes = (
            self._module.PUBLIC_KEY_SIZE,
            self._module.SECRET_KEY_SIZE,
            self._module.SIGNATURE_SIZE,
        )
        if sizes != (spec.public_key_size, spec.secret_key_size, spec.signature_size):
            raise ProviderMismatch(f"PQClean {spec.name} sizes {sizes} differ from the standard")

    def _generate(self) -> tuple[bytes, bytes]:
        return cast(tuple[bytes, bytes], self._module.generate_keypair())

    def _sign(self, secret_key: bytes, message: bytes) -> bytes:
        return cast(bytes, self._module.sign(secret_key, message))

    def _verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        return bool(self._module.verify(public_key, message, signature))


def load(spec: SignatureSpec) -> PQCleanSignature | None:
    if spec.pqclean_module is None:
        return None
    return PQCleanSignature(spec)
