"""The one interface every signature provider implements.

Length rules live here, once, so no provider can forget them: a public key or
secret key of the wrong size, a signature longer than the algorithm allows, or of
the wrong size for a fixed-size scheme, is refused before any C code sees it.
``verify`` never raises: a bad or malformed signature is simply not valid.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from transport.crypto.algorithms import SignatureSpec


class SignatureScheme(ABC):
    provider: str = ""

    def __init__(self, spec: SignatureSpec, provider_version: str) -> None:
        self.spec = spec
        self.provider_version = provider_version

    @property
    def name(self) -> str:
        return self.spec.name

    def generate_keypair(self) -> tuple[bytes, bytes]:
        """Return ``(public_key, secret_key)`` as raw bytes."""
        public_key, secret_key = self._generate()
        if (
            len(public_key) != self.spec.public_key_size
            or len(secret_key) != self.spec.secret_key_size
        ):
            raise ValueError(f"{self.provider} returned a {self.name} key of the wrong size")
        return public_key, secret_key

    def sign(self, secret_key: bytes, message: bytes) -> bytes:
        """Return the detached raw signature of ``message``."""
        if len(secret_key) != self.spec.secret_key_size:
            raise ValueError(
                f"{self.name} secret key must be {self.spec.secret_key_size} bytes, "
                f"got {len(secret_key)}"
            )
        signature = self._sign(secret_key, message)
        if not self.signature_length_ok(len(signature)):
            raise ValueError(f"{self.provider} produced a {self.name} signature of bad length")
        return signature

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """True only for a valid signature; False for anything else, never raises."""
        if len(public_key) != self.spec.public_key_size:
            return False
        if not self.signature_length_ok(len(signature)):
            return False
        try:
            return self._verify(public_key, message, signature)
        except (ValueError, TypeError, RuntimeError):
            return False

    def signature_length_ok(self, length: int) -> bool:
        if self.spec.variable_signature:
            return 0 < length <= self.spec.signature_size
        return length == self.spec.signature_size

    @abstractmethod
    def _generate(self) -> tuple[bytes, bytes]: ...

    @abstractmethod
    def _sign(self, secret_key: bytes, message: bytes) -> bytes: ...

    @abstractmethod
    def _verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...

    def __repr__(self) -> str:
        return f"<{self.name} via {self.provider} {self.provider_version}>"
