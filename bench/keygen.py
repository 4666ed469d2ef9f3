"""Key generation from a QRNG-mixed seed against PQClean's own key generation.

For each algorithm with a seeded form, interleaved in rounds, medians:

* ``pqclean_ms`` — ``generate_keypair()`` (PQClean draws its seed from getrandom);
* ``seeded_ms`` — the same key generation from a given seed (``seeded_keygen``);
* ``qrng_mixed_ms`` — ``transport.keys.generate_key(alg, entropy=mixer)`` end to end:
  32 health-tested bytes from the pty QRNG simulator, HKDF with OS randomness, the
  seeded key generation and the SSH key object.

    python bench/keygen.py [--rounds 7] [--keys 20]

Prints one JSON object; the ratios are against ``pqclean_ms`` (> 1: slower).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# bench/queue.py would shadow the standard library's queue module: drop bench/ from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from hardware.health import HealthTest  # noqa: E402
from hardware.monitor import HealthCheckedSource  # noqa: E402
from hardware.simulators.serial_qrng import SerialQRNGSimulator  # noqa: E402
from hardware.sources import SerialSource  # noqa: E402
from transport.crypto import SIGNATURE_SPECS, SignatureSpec, get_scheme, seeded_keygen  # noqa: E402
from transport.entropy import EntropyMixer  # noqa: E402
from transport.keys import generate_key  # noqa: E402


def _per_key_ms(make: Callable[[], object], keys: int) -> float:
    t = time.perf_counter()
    for _ in range(keys):
        make()
    return (time.perf_counter() - t) / keys * 1e3


def _seeded(spec: SignatureSpec, size: int) -> Callable[[], object]:
    return lambda: seeded_keygen.keypair_from_seed(spec, os.urandom(size))


def _mixed(algorithm: str, mixer: EntropyMixer) -> Callable[[], object]:
    return lambda: generate_key(algorithm, entropy=mixer)


def run(rounds: int, keys: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with SerialQRNGSimulator("good") as sim:
        source = HealthCheckedSource(SerialSource(sim.path), HealthTest(), timeout=10.0)
        try:
            source.read(source.test.params.startup_samples)  # startup test, as keygen does
            mixer = EntropyMixer(source.read, source=sim.path)
            for spec in SIGNATURE_SPECS:
                size = seeded_keygen.seed_size(spec)
                if size is None:
                    continue
                scheme = get_scheme(spec.name)
                cases: dict[str, Callable[[], object]] = {
                    "pqclean_ms": scheme.generate_keypair,
                    "seeded_ms": _seeded(spec, size),
                    "qrng_mixed_ms": _mixed(spec.ssh_name, mixer),
                }
                samples: dict[str, list[float]] = {name: [] for name in cases}
                for _ in range(rounds):
                    for name, make in cases.items():
                        samples[name].append(_per_key_ms(make, keys))
                medians = {name: statistics.median(v) for name, v in samples.items()}
                base = medians["pqclean_ms"]
                results[spec.ssh_name] = {name: round(v, 3) for name, v in medians.items()} | {
                    "seeded_vs_pqclean": round(medians["seeded_ms"] / base, 3),
                    "qrng_mixed_vs_pqclean": round(medians["qrng_mixed_ms"] / base, 3),
                }
            assert mixer.qrng_failures == 0, "the simulated QRNG failed during the run"
        finally:
            source.close()
    return {"bench": "keygen", "rounds": rounds, "keys_per_round": keys, "algorithms": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--keys", type=int, default=20, help="keys per case per round")
    args = ap.parse_args()
    print(json.dumps(run(args.rounds, args.keys), indent=2))


if __name__ == "__main__":
    main()
