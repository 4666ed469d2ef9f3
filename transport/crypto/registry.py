"""One registry: algorithm name -> the implementation that serves it.

liboqs is preferred wherever it offers the algorithm; PQClean serves the rest.
Both providers stay reachable through :func:`providers_for` so the cross-provider
tests can compare their bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from transport.crypto import liboqs, pqclean
from transport.crypto.algorithms import SIGNATURE_SPECS, SignatureSpec
from transport.crypto.errors import AlgorithmUnavailable
from transport.crypto.scheme import SignatureScheme


@dataclass(frozen=True, slots=True)
class AlgorithmStatus:
    spec: SignatureSpec
    scheme: SignatureScheme | None
    reason: str | None
    """Why the algorithm is unavailable, when it is."""


def providers_for(spec: SignatureSpec) -> list[SignatureScheme]:
    """Every provider that implements ``spec``, preferred first."""
    found: list[SignatureScheme] = []
    for load in (liboqs.load, pqclean.load):
        scheme = load(spec)
        if scheme is not None:
            found.append(scheme)
    return found


@functools.cache
def _table() -> dict[str, AlgorithmStatus]:
    table: dict[str, AlgorithmStatus] = {}
    for spec in SIGNATURE_SPECS:
        providers = providers_for(spec)
        if providers:
            entry = AlgorithmStatus(spec, providers[0], None)
        elif spec.pqclean_module is None and not liboqs.available():
            entry = AlgorithmStatus(spec, None, liboqs.status().error or liboqs.ABSENT_REASON)
        else:
            entry = AlgorithmStatus(spec, None, "not enabled in the loaded liboqs")
        table[spec.name] = entry
        table[spec.ssh_name] = entry
    return table


def statuses() -> Iterator[AlgorithmStatus]:
    """Every known algorithm, available or not, in the order of SIGNATURE_SPECS."""
    table = _table()
    for spec in SIGNATURE_SPECS:
        yield table[spec.name]


def available_schemes() -> list[SignatureScheme]:
    return [s.scheme for s in statuses() if s.scheme is not None]


def get_scheme(name: str) -> SignatureScheme:
    """The preferred implementation for a canonical or SSH algorithm name."""
    entry = _table().get(name)
    if entry is None:
        raise AlgorithmUnavailable(f"unknown signature algorithm {name!r}")
    if entry.scheme is None:
        raise AlgorithmUnavailable(f"{entry.spec.name} is unavailable: {entry.reason}")
    return entry.scheme
