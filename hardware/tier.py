"""The security tier (SPEC §6) and the pure rule that picks it from probe results."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from hardware.reports import DeviceReport, KMEStatusReport, SourceKind


class Tier(IntEnum):
    BASIC_PQ = 1
    HARDENED_PQ = 2
    ENTROPY_ENHANCED = 3
    QUANTUM_SECURED = 4

    @property
    def label(self) -> str:
        """The name people read (and the CLI prints): ``HardenedPQ``."""
        return "".join(
            w.upper() if w == "pq" else w.capitalize() for w in self.name.lower().split("_")
        )

    @classmethod
    def parse(cls, value: object) -> Tier:
        if isinstance(value, Tier):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4:
            return cls(value)
        if isinstance(value, str):
            key = value.strip().upper().replace("-", "_")
            # the wire's names ("BasicPQ") are the member names without underscores
            key = {name.replace("_", ""): name for name in cls.__members__}.get(key, key)
            if key.isdigit() and 1 <= int(key) <= 4:
                return cls(int(key))
            if key in cls.__members__:
                return cls[key]
        raise ValueError(f"not a tier: {value!r} (use 1-4 or a tier name)")


@dataclass(frozen=True)
class TierDecision:
    tier: Tier
    reasons: tuple[str, ...]
    devices: tuple[DeviceReport, ...] = ()
    kme: KMEStatusReport | None = None
    simulated: bool = False
    below_floor: bool = False
    decided_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, object]:
        return {
            "tier": int(self.tier),
            "tier_name": self.tier.label,
            "reasons": list(self.reasons),
            "below_floor": self.below_floor,
            "simulated": self.simulated,
            "devices": [d.to_json() for d in self.devices],
            "kme": self.kme.to_json() if self.kme else None,
            "decided_at": self.decided_at,
        }


def decide(
    devices: Sequence[DeviceReport],
    kme: KMEStatusReport | None,
    *,
    floor: Tier = Tier.BASIC_PQ,
    ceiling: Tier = Tier.QUANTUM_SECURED,
) -> TierDecision:
    """Highest tier the hardware supports, capped by `ceiling`; a reason for each step down.

    The floor never raises the tier (that would claim protection that is not there): a
    decision under the floor is flagged `below_floor` for the daemon to act on.
    """
    reasons: list[str] = []
    quantum = [d for d in devices if d.kind is SourceKind.QUANTUM_LOCAL]
    healthy_quantum = [d for d in quantum if d.healthy]

    if kme is None:
        reasons.append("tier 4 unavailable: no KME configured")
    elif not kme.reachable or kme.error:
        reasons.append(f"tier 4 unavailable: KME {kme.url}: {kme.error or 'unreachable'}")
    elif not kme.stored_key_count:
        reasons.append(f"tier 4 unavailable: KME {kme.url} has no stored keys")

    if not quantum:
        reasons.append("tier 3 unavailable: no local quantum RNG found")
        reasons.extend(
            f"{d.label} is not local quantum hardware ({d.kind.value})"
            for d in devices
            if d.kind is SourceKind.UNVERIFIED
        )
    prefix = "not used" if healthy_quantum else "tier 3 unavailable"
    reasons.extend(f"{prefix}: {d.label}: {_why_unhealthy(d)}" for d in quantum if not d.healthy)

    if kme is not None and kme.healthy:
        tier = Tier.QUANTUM_SECURED
    elif healthy_quantum:
        tier = Tier.ENTROPY_ENHANCED
    else:
        tier = Tier.HARDENED_PQ

    if tier > ceiling:
        reasons.append(f"capped at operator ceiling {int(ceiling)} ({ceiling.name})")
        tier = ceiling
    below = tier < floor
    if below:
        reasons.append(f"below operator floor {int(floor)} ({floor.name})")

    simulated = any(d.simulated for d in devices if d.healthy) or bool(
        kme and kme.healthy and kme.simulated
    )
    return TierDecision(
        tier=tier,
        reasons=tuple(reasons),
        devices=tuple(devices),
        kme=kme,
        simulated=simulated,
        below_floor=below,
    )


def _why_unhealthy(d: DeviceReport) -> str:
    if d.error:
        return d.error
    if not d.readable:
        return "not readable"
    if d.health.value == "fail":
        counts = d.health_counts
        return (
            "health test failure (repetition count failures "
            f"{counts.get('rct_failures', 0)}, adaptive proportion failures "
            f"{counts.get('apt_failures', 0)})"
        )
    if d.rate_ok is False:
        return f"rate {d.rate_bps or 0:.0f} B/s below expected {d.expected_rate_bps or 0:.0f} B/s"
    return "not health-tested"
