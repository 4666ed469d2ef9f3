"""``qssh-sidecar doctor``: which provider serves each post-quantum algorithm here.

Lists every signature algorithm (with its provider and version, or why it is
unavailable), whether the liboqs shared library was found, and the hybrid key
exchanges asyncssh can run. ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from transport.crypto import kex_statuses, statuses
from transport.crypto import liboqs as liboqs_provider
from transport.ssh_algorithms import registered_algorithms


def report() -> dict[str, Any]:
    oqs = liboqs_provider.status()
    registered = set(registered_algorithms())
    return {
        "liboqs": {
            "library": str(oqs.library) if oqs.library else None,
            "version": liboqs_provider.version(),
            "reason": oqs.error,
        },
        "signatures": [
            {
                "algorithm": s.spec.name,
                "ssh_name": s.spec.ssh_name,
                "family": str(s.spec.family),
                "available": s.scheme is not None,
                "provider": s.scheme.provider if s.scheme else None,
                "provider_version": s.scheme.provider_version if s.scheme else None,
                "registered_with_asyncssh": s.spec.ssh_name in registered,
                "public_key_bytes": s.spec.public_key_size,
                "signature_bytes": s.spec.signature_size,
                "reason": s.reason,
            }
            for s in statuses()
        ],
        "kex": [
            {
                "algorithm": k.name,
                "available": k.available,
                "provider": k.provider,
                "reason": k.reason,
            }
            for k in kex_statuses()
        ],
    }


def _print_table(data: dict[str, Any]) -> None:
    oqs = data["liboqs"]
    if oqs["library"]:
        print(f"liboqs: {oqs['version']} ({oqs['library']})")
    else:
        print(f"liboqs: not used ({oqs['reason']})")
    print()
    print(f"{'SSH algorithm':<28} {'provider':<26} status")
    for sig in data["signatures"]:
        if sig["available"]:
            provider = f"{sig['provider']} ({sig['provider_version']})"
            status = "ok"
        else:
            provider, status = "-", f"unavailable: {sig['reason']}"
        print(f"{sig['ssh_name']:<28} {provider:<26} {status}")
    print()
    print(f"{'key exchange (hybrid)':<36} {'provider':<42} status")
    for kex in data["kex"]:
        status = "ok" if kex["available"] else f"unavailable: {kex['reason']}"
        print(f"{kex['algorithm']:<36} {kex['provider']:<42} {status}")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Show which provider serves each post-quantum algorithm."
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    data = report()
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        _print_table(data)
    usable = any(s["available"] for s in data["signatures"]) and any(
        k["available"] for k in data["kex"]
    )
    return 0 if usable else 1
