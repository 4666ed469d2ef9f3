"""The signature algorithms the transport knows, as data.

Each entry names the algorithm once and says how each provider calls it. Sizes are
the FIPS 204 / Falcon / SPHINCS+ round-3 parameters; the providers are checked
against them when loaded, so a library that disagrees is refused, not trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Family(StrEnum):
    FALCON = "falcon"
    ML_DSA = "ml-dsa"
    SPHINCS = "sphincs+"
    SLH_DSA = "slh-dsa"


@dataclass(frozen=True, slots=True)
class SignatureSpec:
    name: str
    """Canonical name, as liboqs spells it."""
    ssh_name: str
    """The SSH public-key / signature algorithm name (OQS-OpenSSH, draft-sfluhrer-ssh-mldsa)."""
    family: Family
    public_key_size: int
    secret_key_size: int
    signature_size: int
    """Exact signature size, or the maximum when ``variable_signature``."""
    variable_signature: bool
    liboqs_name: str | None
    pqclean_module: str | None
    """Module under ``pqcrypto.sign`` (PQClean); None when PQClean lacks it."""
    slow_signer: bool = False
    """Signing takes tens of milliseconds or more: run it off the event loop."""
    aliases: tuple[str, ...] = ()
    """Other SSH names for exactly this wire format (same public key and signature
    blobs, only the name string differs), accepted after ``ssh_name``."""


SIGNATURE_SPECS: tuple[SignatureSpec, ...] = (
    SignatureSpec(
        "Falcon-512",
        "ssh-falcon512",
        Family.FALCON,
        897,
        1281,
        752,
        True,
        "Falcon-512",
        "falcon_512",
    ),
    SignatureSpec(
        "Falcon-1024",
        "ssh-falcon1024",
        Family.FALCON,
        1793,
        2305,
        1462,
        True,
        "Falcon-1024",
        "falcon_1024",
    ),
    SignatureSpec(
        "ML-DSA-44",
        "ssh-mldsa-44",
        Family.ML_DSA,
        1312,
        2560,
        2420,
        False,
        "ML-DSA-44",
        "ml_dsa_44",
        # OQS-OpenSSH OQS-v9, DigiCert NanoSSH, draft-rpe-ssh-mldsa
        aliases=("ssh-mldsa44",),
    ),
    SignatureSpec(
        "ML-DSA-65",
        "ssh-mldsa-65",
        Family.ML_DSA,
        1952,
        4032,
        3309,
        False,
        "ML-DSA-65",
        "ml_dsa_65",
        # OQS-OpenSSH OQS-v9, DigiCert NanoSSH, draft-rpe-ssh-mldsa
        aliases=("ssh-mldsa65",),
    ),
    SignatureSpec(
        "ML-DSA-87",
        "ssh-mldsa-87",
        Family.ML_DSA,
        2592,
        4896,
        4627,
        False,
        "ML-DSA-87",
        "ml_dsa_87",
        # OQS-OpenSSH OQS-v9, DigiCert NanoSSH, draft-rpe-ssh-mldsa
        aliases=("ssh-mldsa87",),
    ),
    SignatureSpec(
        "SPHINCS+-SHA2-128f-simple",
        "ssh-sphincssha2128fsimple",
        Family.SPHINCS,
        32,
        64,
        17088,
        False,
        "SPHINCS+-SHA2-128f-simple",
        "sphincs_sha2_128f_simple",
        slow_signer=True,
    ),
    SignatureSpec(
        "SPHINCS+-SHA2-256f-simple",
        "ssh-sphincssha2256fsimple",
        Family.SPHINCS,
        64,
        128,
        49856,
        False,
        "SPHINCS+-SHA2-256f-simple",
        "sphincs_sha2_256f_simple",
        slow_signer=True,
    ),
    # FIPS 205 SLH-DSA: only liboqs implements it; PQClean's SPHINCS+ is round 3.
    SignatureSpec(
        "SLH-DSA-SHA2-128f",
        "ssh-slh-dsa-sha2-128f",
        Family.SLH_DSA,
        32,
        64,
        17088,
        False,
        "SLH_DSA_PURE_SHA2_128F",
        None,
        slow_signer=True,
    ),
    SignatureSpec(
        "SLH-DSA-SHA2-128s",
        "ssh-slh-dsa-sha2-128s",
        Family.SLH_DSA,
        32,
        64,
        7856,
        False,
        "SLH_DSA_PURE_SHA2_128S",
        None,
        slow_signer=True,
    ),
    SignatureSpec(
        "SLH-DSA-SHA2-256f",
        "ssh-slh-dsa-sha2-256f",
        Family.SLH_DSA,
        64,
        128,
        49856,
        False,
        "SLH_DSA_PURE_SHA2_256F",
        None,
        slow_signer=True,
    ),
)
