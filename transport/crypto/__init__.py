"""Post-quantum signature providers (liboqs when present, PQClean always).

Public surface::

    get_scheme("ssh-falcon512").sign(secret_key, message)
    statuses()            # every algorithm, its provider or why it is missing
    available_kex()       # hybrid KEX names asyncssh can run here
"""

from transport.crypto.algorithms import SIGNATURE_SPECS, Family, SignatureSpec
from transport.crypto.errors import AlgorithmUnavailable, ProviderMismatch
from transport.crypto.kex import DEFAULT_KEX, HYBRID_KEX, available_kex, kex_statuses
from transport.crypto.registry import (
    AlgorithmStatus,
    available_schemes,
    get_scheme,
    providers_for,
    statuses,
)
from transport.crypto.scheme import SignatureScheme

__all__ = [
    "DEFAULT_KEX",
    "HYBRID_KEX",
    "SIGNATURE_SPECS",
    "AlgorithmStatus",
    "AlgorithmUnavailable",
    "Family",
    "ProviderMismatch",
    "SignatureScheme",
    "SignatureSpec",
    "available_kex",
    "available_schemes",
    "get_scheme",
    "kex_statuses",
    "providers_for",
    "statuses",
]
