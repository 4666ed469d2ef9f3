"""``qssh-sidecar doctor``: which provider serves each post-quantum algorithm here.

Lists every signature algorithm (with its provider and version, or why it is
unavailable), whether the liboqs shared library was found, and the hybrid key
exchanges asyncssh can run. ``--json`` for scripts.

liboqs is found twice, independently: by liboqs-python (our signature provider: the
loader path, then ``$OQS_INSTALL_PATH``) and by asyncssh (sntrup761 key exchange: the
loader path only). The report says which of the two found it and how to fix the other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from transport.crypto import kex_statuses, statuses
from transport.crypto import liboqs as liboqs_provider
from transport.ssh_algorithms import registered_algorithms


def _library_dir(library: Path) -> str:
    return str(library.parent) if library.is_absolute() else "the directory holding liboqs.so"


def _fixes(
    oqs: liboqs_provider.LiboqsStatus,
    view: liboqs_provider.AsyncsshView,
    version: str | None,
    expected: str | None,
) -> list[str]:
    want = f"liboqs {expected}" if expected else "liboqs"
    if oqs.library is None and view.library is None:
        return [
            f"neither liboqs-python nor asyncssh found liboqs: build {want} as a shared "
            "library (cmake -DBUILD_SHARED_LIBS=ON), install it and run ldconfig "
            "(docs/crypto.md, 'Installing liboqs')"
        ]
    fixes: list[str] = []
    if oqs.library is not None and view.library is None:
        where = _library_dir(oqs.library)
        fixes.append(
            f"asyncssh did not find liboqs (it searches only {liboqs_provider.LOADER_PATH}), "
            "so sntrup761 key exchange is not offered: list "
            f"{where} in a file under /etc/ld.so.conf.d/ and run ldconfig "
            f"(or start with LD_LIBRARY_PATH={where})"
        )
    if oqs.library is None and view.library is not None:
        fixes.append(
            f"liboqs-python cannot use {view.library}: {oqs.error}; install a complete "
            f"{want} shared library"
        )
    if view.library is not None and not view.sntrup761:
        fixes.append(
            f"{view.library} has no sntrup761: rebuild liboqs with KEM_ntruprime_sntrup761 "
            "enabled (OQS_MINIMAL_BUILD leaves it out unless listed)"
        )
    if version and expected and not version.removeprefix("liboqs ").startswith(expected + "."):
        fixes.append(
            f"{version} differs from the liboqs {expected} that liboqs-python expects: "
            f"build liboqs tag {expected}.0"
        )
    return fixes


def report() -> dict[str, Any]:
    oqs = liboqs_provider.status()
    view = liboqs_provider.asyncssh_view()
    version = liboqs_provider.version()
    expected = liboqs_provider.expected_version()
    registered = set(registered_algorithms())
    return {
        "liboqs": {
            "library": str(oqs.library) if oqs.library else None,
            "version": version,
            "reason": oqs.error,
            "expected_version": expected,
            "found_by": {
                "liboqs-python": {
                    "found": oqs.library is not None,
                    "library": str(oqs.library) if oqs.library else None,
                    "via": liboqs_provider.found_via(oqs.library) if oqs.library else None,
                    "serves": "Falcon, ML-DSA, SLH-DSA signatures",
                },
                "asyncssh": {
                    "found": view.library is not None,
                    "library": view.library,
                    "via": liboqs_provider.LOADER_PATH if view.library else None,
                    "serves": "sntrup761 key exchange",
                    "sntrup761": view.sntrup761,
                },
            },
            "fixes": _fixes(oqs, view, version, expected),
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
    for who, seen in oqs["found_by"].items():
        found = f"found {seen['library']} via {seen['via']}" if seen["found"] else "not found"
        print(f"  {who} ({seen['serves']}): {found}")
    for fix in oqs["fixes"]:
        print(f"  fix: {fix}")
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
