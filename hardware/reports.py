"""Plain records of what a probe found: one per device, one for the KME."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum


class SourceKind(StrEnum):
    QUANTUM_LOCAL = "quantum_local"
    QUANTUM_REMOTE = "quantum_remote"
    TRNG = "trng"
    # Looks like an RNG node but its hardware could not be confirmed (e.g. /dev/qrandom0
    # without the Quantis PCI parent); never counted as quantum.
    UNVERIFIED = "unverified"


class HealthVerdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    UNTESTED = "untested"


@dataclass
class DeviceReport:
    kind: SourceKind
    model: str
    path: str | None = None
    vendor_id: str | None = None
    product_id: str | None = None
    product: str | None = None
    serial: str | None = None
    sys_path: str | None = None
    driver: str | None = None
    readable: bool = False
    bytes_sampled: int = 0
    rate_bps: float | None = None
    expected_rate_bps: float | None = None
    rate_ok: bool | None = None
    health: HealthVerdict = HealthVerdict.UNTESTED
    health_counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    simulated: bool = False

    @property
    def healthy(self) -> bool:
        return self.readable and self.health is HealthVerdict.PASS and self.rate_ok is not False

    @property
    def label(self) -> str:
        return f"{self.model} at {self.path or self.sys_path or '?'}"

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["kind"] = self.kind.value
        out["health"] = self.health.value
        out["healthy"] = self.healthy
        return out


@dataclass
class KMEStatusReport:
    url: str
    reachable: bool = False
    stored_key_count: int | None = None
    key_size: int | None = None
    max_key_size: int | None = None
    min_key_size: int | None = None
    source_kme_id: str | None = None
    target_kme_id: str | None = None
    error: str | None = None
    simulated: bool = False

    @property
    def healthy(self) -> bool:
        return self.reachable and self.error is None and (self.stored_key_count or 0) > 0

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["healthy"] = self.healthy
        return out
