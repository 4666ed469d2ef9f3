"""Key pairs from a given seed (the way QRNG-mixed randomness reaches a key) are exactly
the key pairs PQClean's own ``crypto_sign_keypair()`` makes when its ``getrandom()``
returns that seed.

The reference runs in a child Python with ``tests/transport/shim/fixed_getrandom.c``
preloaded: armed with a seed, it serves that seed to the next ``getrandom()`` calls and
counts how many bytes PQClean drew.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.subprocesses import child_env
from transport.crypto import SIGNATURE_SPECS, Family, SignatureSpec, get_scheme, seeded_keygen
from transport.crypto.pqclean_seeded import SeededKeygenUnavailable
from transport.crypto.seeded import sign_with_seed

SHIM_SOURCE = Path(__file__).parent / "shim" / "fixed_getrandom.c"
SEEDED = [s for s in SIGNATURE_SPECS if seeded_keygen.seed_size(s) is not None]

_REFERENCE = r"""
import ctypes, importlib, json, sys
shim = ctypes.CDLL(None)
shim.qssh_served.restype = ctypes.c_size_t
out = []
for module, seed_hex in json.loads(sys.argv[1]):
    m = importlib.import_module("pqcrypto.sign." + module)
    seed = bytes.fromhex(seed_hex)
    shim.qssh_arm(seed, ctypes.c_size_t(len(seed)))
    pk, sk = m.generate_keypair()
    out.append({"pk": pk.hex(), "sk": sk.hex(), "served": shim.qssh_served()})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler is not None, "a C compiler is needed to build the getrandom shim"
    out = tmp_path_factory.mktemp("shim") / "fixed_getrandom.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
        check=True,
        timeout=60,
    )
    return out


def pqclean_reference(shim: Path, cases: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    """``crypto_sign_keypair()`` of each (pqcrypto module, seed), run by PQClean itself."""
    arg = json.dumps([(module, seed.hex()) for module, seed in cases])
    result = subprocess.run(
        [sys.executable, "-c", _REFERENCE, arg],
        env=child_env(LD_PRELOAD=str(shim)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    reference: list[dict[str, object]] = json.loads(result.stdout)
    return reference


@pytest.mark.parametrize("spec", SEEDED, ids=lambda s: s.name)
def test_the_seeded_key_is_the_one_pqclean_makes_from_that_seed(
    shim: Path, spec: SignatureSpec
) -> None:
    assert spec.pqclean_module is not None
    size = seeded_keygen.seed_size(spec)
    assert size is not None
    seeds = [os.urandom(size) for _ in range(3)]
    reference = pqclean_reference(shim, [(spec.pqclean_module, s) for s in seeds])
    for seed, ref in zip(seeds, reference, strict=True):
        assert ref["served"] == size  # PQClean drew exactly one seed, all from the shim
        public_key, secret_key = seeded_keygen.keypair_from_seed(spec, seed)
        assert public_key.hex() == ref["pk"]
        if spec.family is Family.ML_DSA:
            assert secret_key == seed  # kept in seed form; its signatures are tested below
        else:
            assert secret_key.hex() == ref["sk"]


def test_the_shim_really_controls_pqclean(shim: Path) -> None:
    """Guard for the test above: two runs on one seed agree, another seed differs."""
    a, b, c = pqclean_reference(
        shim,
        [("falcon_512", b"\x01" * 48), ("falcon_512", b"\x01" * 48), ("falcon_512", b"\x02" * 48)],
    )
    assert a["pk"] == b["pk"]
    assert a["pk"] != c["pk"]


@pytest.mark.parametrize("spec", SEEDED, ids=lambda s: s.name)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_seeded_keys_sign_and_verify(spec: SignatureSpec, data: st.DataObject) -> None:
    size = seeded_keygen.seed_size(spec)
    assert size is not None
    seed = data.draw(st.binary(min_size=size, max_size=size))
    public_key, secret_key = seeded_keygen.keypair_from_seed(spec, seed)
    assert (public_key, secret_key) == seeded_keygen.keypair_from_seed(spec, seed)
    scheme = get_scheme(spec.name)
    message = data.draw(st.binary(max_size=64))
    if spec.family is Family.ML_DSA:
        signature = sign_with_seed(spec.ssh_name, secret_key, message)
    else:
        signature = scheme.sign(secret_key, message)
    assert scheme.verify(public_key, message, signature)  # verified by PQClean
    assert not scheme.verify(public_key, message + b"x", signature)


@pytest.mark.parametrize("spec", SEEDED, ids=lambda s: s.name)
def test_a_seed_of_the_wrong_length_is_refused(spec: SignatureSpec) -> None:
    size = seeded_keygen.seed_size(spec)
    assert size is not None
    for wrong in (0, size - 1, size + 1):
        with pytest.raises(ValueError, match=f"seed is {size} bytes"):
            seeded_keygen.keypair_from_seed(spec, b"\x00" * wrong)


def test_algorithms_without_a_seeded_form_say_so() -> None:
    liboqs_only = [s for s in SIGNATURE_SPECS if s.pqclean_module is None]
    assert liboqs_only  # SLH-DSA: liboqs only, no seeded form here
    for spec in liboqs_only:
        assert seeded_keygen.seed_size(spec) is None
        with pytest.raises(SeededKeygenUnavailable):
            seeded_keygen.keypair_from_seed(spec, b"\x00" * 48)
