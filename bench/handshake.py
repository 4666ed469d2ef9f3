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
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncssh

from transport.crypto import DEFAULT_KEX, available_schemes, liboqs
from transport.keys import generate_key, parse_authorized_keys
from transport.ssh_options import ssh_options_for_tier

CLASSICAL = "ssh-ed25519+curve25519-sha256"
TARGET_RATIO = {"pqclean": 3.0, "liboqs": 1.5}


@dataclass
class Config:
    label: str
    server: asyncssh.SSHAcceptor
    connect_options: dict[str, Any]


async def _noop_session(process: asyncssh.SSHServerProcess[str]) -> None:
    process.exit(0)


async def _pq_config(alg: str, kex: str) -> Config:
    host_key, user_key = generate_key(alg), generate_key(alg)
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0,
        server_host_keys=[host_key],
        authorized_client_keys=parse_authorized_keys(user_key.export_public_key().decode()),
        process_factory=_noop_session,
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
    return Config(alg, server, options)


async def _classical_config() -> Config:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    classical = {
        "kex_algs": ["curve25519-sha256"],
        "encryption_algs": ["aes256-gcm@openssh.com"],
        "mac_algs": ["hmac-sha2-256-etm@openssh.com"],
        "compression_algs": ["none"],
        "signature_algs": ["ssh-ed25519"],
    }
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(
            user_key.export_public_key().decode()
        ),
        process_factory=_noop_session,
        **classical,
    )  # fmt: skip
    port = server.sockets[0].getsockname()[1]
    options = {
        **classical,
        "server_host_key_algs": ["ssh-ed25519"],
        "host": "127.0.0.1", "port": port, "username": "bench", "client_keys": [user_key],
        "known_hosts": asyncssh.import_known_hosts(
            f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}"
        ),
        "agent_path": None, "config": (),
    }  # fmt: skip
    return Config(CLASSICAL, server, options)


async def _handshake(options: dict[str, Any]) -> float:
    start = time.perf_counter()
    conn = await asyncssh.connect(**options)
    conn.close()
    await conn.wait_closed()
    return time.perf_counter() - start


def _ms(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1e3, 3),
        "p10_ms": round(ordered[len(ordered) // 10] * 1e3, 3),
        "p90_ms": round(ordered[(len(ordered) * 9) // 10] * 1e3, 3),
    }


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
            "sign": _ms(signs),
            "verify": _ms(verifies),
            "rounds": sign_rounds,
            "signature_bytes": len(signature),
            "public_key_bytes": len(public_key),
        }
    return result


async def handshakes(rounds: int, algorithms: Sequence[str], kex: str) -> dict[str, Any]:
    configs = [await _classical_config()] + [await _pq_config(a, kex) for a in algorithms]
    samples: dict[str, list[float]] = {c.label: [] for c in configs}
    try:
        for config in configs:  # warm-up, not recorded
            await _handshake(config.connect_options)
        for _ in range(rounds):
            for config in configs:
                samples[config.label].append(await _handshake(config.connect_options))
    finally:
        for config in configs:
            config.server.close()
            await config.server.wait_closed()
    baseline = statistics.median(samples[CLASSICAL])
    report: dict[str, Any] = {}
    for label, values in samples.items():
        report[label] = {
            **_ms(values),
            "ratio_vs_classical": round(statistics.median(values) / baseline, 3),
        }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--kex", default=DEFAULT_KEX)
    parser.add_argument("--algorithms", nargs="*", default=None,
                        help="host-key algorithms (default: every available one)")  # fmt: skip
    args = parser.parse_args(argv)
    algorithms = args.algorithms or [s.spec.ssh_name for s in available_schemes()]
    handshake = asyncio.run(handshakes(args.rounds, algorithms, args.kex))
    falcon = available_schemes()[0]
    provider = "liboqs" if liboqs.available() else "pqclean"
    ratio = handshake.get("ssh-falcon512", {}).get("ratio_vs_classical")
    output = {
        "benchmark": "handshake",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "kex": args.kex,
        "baseline": CLASSICAL,
        "handshake": handshake,
        "sign_verify": sign_verify(args.rounds),
        "falcon512": {
            "provider": f"{falcon.provider} ({falcon.provider_version})",
            "ratio_vs_classical": ratio,
            "target_ratio": TARGET_RATIO[provider],
            "meets_target": ratio is not None and ratio <= TARGET_RATIO[provider],
        },
    }
    json.dump(output, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
