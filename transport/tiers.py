"""What a tier is for one request (SPEC §6.1): node tier, session tier, value escalation.

- The **node tier** comes from the hardware (the daemon's monitor) — a fixed value in
  tests.
- The **session tier** is what one SSH session gives: its negotiated cipher and host
  key, and whether its queue frames are sealed with a QKD key (tier 4).
- The **effective tier** of a request is the lower of the two, with both reasons kept.
- A transaction's ``value_usd`` sets the tier it needs (:meth:`TierPolicy.required_tier`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

TIER_NAMES = {1: "BasicPQ", 2: "HardenedPQ", 3: "EntropyEnhanced", 4: "QuantumSecured"}
CRITICAL_KINDS = frozenset({"block_import", "vote", "transaction", "entropy_share"})
HARDENED_CIPHERS = frozenset({"aes256-gcm@openssh.com"})
FORCED_SYNC_TIER = 3
SEALED_TIER = 4
MAX_UNSEALED_TIER = 3

# SPEC §6.1 value escalation: value_usd below bound n needs tier n+1; above all, tier 4.
DEFAULT_VALUE_BOUNDS: tuple[Decimal, ...] = (Decimal(100), Decimal(10_000), Decimal(1_000_000))


@dataclass(frozen=True, slots=True)
class TierInfo:
    level: int
    reasons: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return TIER_NAMES.get(self.level, f"tier{self.level}")

    def to_wire(self) -> dict[str, Any]:
        return {"tier": self.level, "name": self.name, "reasons": list(self.reasons)}


def tier_name(level: int) -> str:
    return TIER_NAMES.get(level, f"tier{level}")


def effective_tier(node: TierInfo, session: TierInfo) -> TierInfo:
    """The lower of the node and session tiers, with the reason it is not higher."""
    if session.level < node.level:
        why = f"session gives tier {session.level}, node gives {node.level}"
        return TierInfo(session.level, (why, *session.reasons))
    if node.level < session.level:
        why = f"node gives tier {node.level}, session gives {session.level}"
        return TierInfo(node.level, (why, *node.reasons))
    return TierInfo(node.level, (*node.reasons, *session.reasons))


@dataclass(frozen=True)
class TierPolicy:
    """Configurable rules: value bounds and the host-key algorithms each tier accepts.

    ``host_keys[t]`` (if set) lists the host-key algorithms a session must use to reach
    tier ``t``; a tier without an entry accepts any (post-quantum) host key.
    """

    value_bounds: tuple[Decimal, ...] = DEFAULT_VALUE_BOUNDS
    host_keys: Mapping[int, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bounds = self.value_bounds
        if len(bounds) != 3:
            raise ValueError("value bounds: give exactly 3 (for tiers 1, 2 and 3)")
        if any(b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"value bounds must be positive and increasing, got {bounds}")
        for t in self.host_keys:
            if t not in (2, 3, 4):
                raise ValueError(f"host-key sets are per tier 2, 3 or 4, not {t}")

    @classmethod
    def from_values(
        cls,
        value_bounds: Sequence[int | float | str] | None = None,
        host_keys: Mapping[int, Sequence[str]] | None = None,
    ) -> TierPolicy:
        bounds = DEFAULT_VALUE_BOUNDS
        if value_bounds is not None:
            try:
                bounds = tuple(Decimal(str(b)) for b in value_bounds)
            except InvalidOperation:
                raise ValueError(f"value bounds must be numbers, got {value_bounds}") from None
        keys = {int(t): tuple(algs) for t, algs in (host_keys or {}).items()}
        return cls(bounds, keys)

    def required_tier(self, message: Mapping[str, Any]) -> int:
        """The tier a message needs: transactions escalate with ``value_usd``."""
        if message.get("kind") != "transaction" or message.get("value_usd") is None:
            return 1
        try:
            value = Decimal(str(message["value_usd"]))
        except InvalidOperation:
            return 1  # the message model rejects it with a clearer error
        for tier, bound in enumerate(self.value_bounds, start=1):
            if value < bound:
                return tier
        return 4

    def session_tier(
        self, *, ciphers: Sequence[str], host_key_alg: str | None, sealed: bool
    ) -> TierInfo:
        """The highest tier one SSH session's algorithms (and sealing) give."""
        reasons: list[str] = []
        level = 1
        for tier in (2, 3, 4):
            missing = self._missing_for(tier, ciphers, host_key_alg, sealed)
            if missing:
                reasons.append(f"session not tier {tier}: {missing}")
                break
            level = tier
        return TierInfo(level, tuple(reasons))

    def _missing_for(
        self, tier: int, ciphers: Sequence[str], host_key_alg: str | None, sealed: bool
    ) -> str:
        weak = sorted({c for c in ciphers if c not in HARDENED_CIPHERS})
        if weak:
            return f"cipher {', '.join(weak)} (tier >= 2 needs AES-256-GCM)"
        allowed = self.host_keys.get(tier)
        if allowed is not None and host_key_alg not in allowed:
            return f"host key {host_key_alg} (tier {tier} accepts {', '.join(allowed)})"
        if tier == SEALED_TIER and not sealed:
            return "queue frames not sealed with a QKD key"
        return ""


DEFAULT_POLICY = TierPolicy()


def needs_sync(kind: str, requested: str, effective_level: int) -> tuple[str, bool]:
    """The mode a submit gets: critical kinds always sync; tier >= 3 makes every one sync.

    ``requested`` is ``sync``/``async`` (the kind default already resolved); returns
    ``(mode, upgraded)``."""
    if requested == "async" and (kind in CRITICAL_KINDS or effective_level >= FORCED_SYNC_TIER):
        return "sync", True
    return requested, False
