"""SSH handshake cost per post-quantum host-key algorithm, against classical SSH.

Each round connects once to every configuration, in turn (interleaved), so the
classical baseline (Ed25519 host and user keys, curve25519-sha256) sees the same
machine conditions as the post-quantum ones; medians and ratios are reported.
A handshake is: TCP connect, key exchange, host-key check, public-key user auth,
then close. Server and client run on one event loop in this process, over
127.0.0.1. Also measures raw sign and verify time per algorithm.

    python bench/handshake.py [--rounds 30] [--kex mlkem768x25519-sha256]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncssh

from bench.baselines import (
    CLASSICAL_SSH,
    SSHEndpoint,
    classical_ssh_endpoint,
    noop_session,
    ssh_handshake,
)
from bench.stats import dumps, interleave, median, spread_ms
from transport.crypto import DEFAULT_KEX, available_schemes, liboqs
from transport.keys import generate_key, parse_authorized_keys
from transport.ssh_options import ssh_options_for_tier

TARGET_RATIO = {"pqclean": 3.0, "liboqs": 1.5}


async def _pq_endpoint(alg: str, kex: str) -> SSHEndpoint:
    host_key, user_key = generate_key(alg), generate_key(alg)
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0,
        server_host_keys=[host_key],
        authorized_client_keys=parse_authorized_keys(user_key.export_public_key().decode()),
        process_factory=noop_session,
        **{**ssh_options_for_tier(2, "server"), "kex_algs": [kex]},
    )  # fmt: skip
    port = server.sockets[0].getsockname()[1]
    options = {
        **ssh_options_for_tier(2, "client"),
        "kex_algs": [kex], "server_host_key_algs": [alg], "signature_algs": [alg],
        "host": "127.0.0.1", "port": port, "username": "bench", "client_keys": [user_key],
        "known_hosts": asyncssh.import_known_hosts(
            f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}"
        ),
        "agent_path": None, "config": (),
    }  # fmt: skip
    return SSHEndpoint(alg, server, options)


def sign_verify(rounds: int) -> dict[str, Any]:
    message = os.urandom(32)  # an SSH exchange hash is 32-48 bytes
    result: dict[str, Any] = {}
    for scheme in available_schemes():
        public_key, secret_key = scheme.generate_keypair()
        signs, verifies = [], []
        sign_rounds = rounds if not scheme.spec.slow_signer else max(5, rounds // 4)
        for _ in range(sign_rounds):
            t0 = time.perf_counter()
            signature = scheme.sign(secret_key, message)
            t1 = time.perf_counter()
            ok = scheme.verify(public_key, message, signature)
            t2 = time.perf_counter()
            assert ok
            signs.append(t1 - t0)
            verifies.append(t2 - t1)
        result[scheme.spec.ssh_name] = {
            "provider": f"{scheme.provider} ({scheme.provider_version})",
            "sign": spread_ms(signs),
            "verify": spread_ms(verifies),
            "rounds": sign_rounds,
            "signature_bytes": len(signature),
            "public_key_bytes": len(public_key),
        }
    return result


def _handshake_case(endpoint: SSHEndpoint) -> Callable[[], Awaitable[float]]:
    return lambda: ssh_handshake(endpoint.connect_options)


async def handshakes(rounds: int, algorithms: Sequence[str], kex: str) -> dict[str, Any]:
    endpoints = [await classical_ssh_endpoint()] + [await _pq_endpoint(a, kex) for a in algorithms]
    try:
        for endpoint in endpoints:  # warm-up, not recorded
            await ssh_handshake(endpoint.connect_options)
        samples = await interleave([(e.label, _handshake_case(e)) for e in endpoints], rounds)
    finally:
        for endpoint in endpoints:
            await endpoint.close()
    baseline = median(samples[CLASSICAL_SSH])
    report: dict[str, Any] = {}
    for label, values in samples.items():
        report[label] = {
            **spread_ms(values),
            "ratio_vs_classical": round(median(values) / baseline, 3),
        }
    return report


async def run(rounds: int, algorithms: Sequence[str] | None, kex: str) -> dict[str, Any]:
    chosen = list(algorithms or [s.spec.ssh_name for s in available_schemes()])
    handshake = await handshakes(rounds, chosen, kex)
    falcon = available_schemes()[0]
    provider = "liboqs" if liboqs.available() else "pqclean"
    ratio = handshake.get("ssh-falcon512", {}).get("ratio_vs_classical")
    return {
        "ratios": {
            f"{label}_handshake_vs_classical": figures["ratio_vs_classical"]
            for label, figures in handshake.items()
            if label != CLASSICAL_SSH
        },
        "ratio_meaning": "handshake time / classical handshake time: > 1 = slower than classical",
        "benchmark": "handshake",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "kex": kex,
        "baseline": CLASSICAL_SSH,
        "handshake": handshake,
        "sign_verify": await asyncio.to_thread(sign_verify, rounds),
        "falcon512": {
            "provider": f"{falcon.provider} ({falcon.provider_version})",
            "ratio_vs_classical": ratio,
            "target_ratio": TARGET_RATIO[provider],
            "meets_target": ratio is not None and ratio <= TARGET_RATIO[provider],
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--kex", default=DEFAULT_KEX)
    parser.add_argument("--algorithms", nargs="*", default=None,
                        help="host-key algorithms (default: every available one)")  # fmt: skip
    args = parser.parse_args(argv)
    sys.stdout.buffer.write(dumps(asyncio.run(run(args.rounds, args.algorithms, args.kex))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
