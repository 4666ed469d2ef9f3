"""What a tier is for one request (SPEC §6.1): node tier, session tier, value escalation.

- The **node tier** comes from the hardware (the daemon's monitor) — a fixed value in
  tests.
- The **session tier** is what one SSH session gives: its negotiated cipher and host
  key, and whether its queue frames are sealed with a QKD key (tier 4).
- The **effective tier** of a request is the lower of the two, with both reasons kept.
- A transaction's ``value_usd`` sets the tier it needs (:meth:`TierPolicy.required_tier`).
- :func:`admit` is the one rule every submit path (SSH ``submit``/``submit_batch``, the
  node endpoint, and any later one) runs before it hands a message to the queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from hardware.tier import Tier
from sidecar.errors import InvalidMessage, MessageTooLarge, TierRequired
from sidecar.messages import DEFAULT_MAX_MESSAGE_BYTES, Kind, Mode, QueueMessage, resolve_mode

TIER_NAMES = {int(t): t.label for t in Tier}  # "BasicPQ" ... "QuantumSecured"
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
    """Configurable rules: value bounds, the host-key algorithms each tier accepts, and
    what :func:`admit` applies to every submit.

    ``host_keys[t]`` (if set) lists the host-key algorithms a session must use to reach
    tier ``t``; a tier without an entry accepts any (post-quantum) host key.
    ``always_sync`` (the daemon's ``durability.policy = "sync"``) makes every submit
    sync; ``max_message_bytes`` bounds one message's canonical JSON.
    """

    value_bounds: tuple[Decimal, ...] = DEFAULT_VALUE_BOUNDS
    host_keys: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    always_sync: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        bounds = self.value_bounds
        if len(bounds) != 3:
            raise ValueError("value bounds: give exactly 3 (for tiers 1, 2 and 3)")
        if any(b <= 0 for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"value bounds must be positive and increasing, got {bounds}")
        for t in self.host_keys:
            if t not in (2, 3, 4):
                raise ValueError(f"host-key sets are per tier 2, 3 or 4, not {t}")
        if self.max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {self.max_message_bytes}")

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


def needs_sync(
    kind: Kind | str, requested: Mode | str, effective_level: int, *, always_sync: bool = False
) -> tuple[Mode, bool]:
    """The mode a submit gets, and whether it was upgraded (SPEC §6.1).

    A kind whose default mode is sync (``sidecar.messages``' kind table) is never made
    async; at tier >= 3, or with ``always_sync``, every submit is sync. ``requested`` is
    ``sync``/``async`` (the kind default already resolved)."""
    mode = Mode(requested)
    forced = always_sync or effective_level >= FORCED_SYNC_TIER
    if mode is Mode.ASYNC and (forced or Kind(kind).default_mode is Mode.SYNC):
        return Mode.SYNC, True
    return mode, False


@dataclass(frozen=True, slots=True)
class Admission:
    """How one admitted submit goes into the queue."""

    mode: Mode
    upgraded: bool


def message_from_wire(raw: object, policy: TierPolicy = DEFAULT_POLICY) -> QueueMessage:
    """A client's JSON (canonical or the node's serde form) as a message, size-checked."""
    if not isinstance(raw, dict | str):
        raise InvalidMessage("'message' must be a JSON object (canonical or serde form)")
    return QueueMessage.from_json(raw, max_size=policy.max_message_bytes)


def admit(
    message: QueueMessage,
    requested_mode: Mode | str | None,
    have: TierInfo,
    policy: TierPolicy = DEFAULT_POLICY,
) -> Admission:
    """The one submit rule: every path that hands a message to the queue calls this.

    Refuses a message over ``policy.max_message_bytes`` (:class:`MessageTooLarge`) and a
    transaction whose ``value_usd`` needs a higher tier than ``have``
    (:class:`TierRequired`, with the reasons ``have`` carries); resolves ``"default"``
    or ``None`` to the kind's default mode and applies :func:`needs_sync`.
    """
    size = message.encoded_size
    if size > policy.max_message_bytes:
        raise MessageTooLarge(
            f"{message.kind.value} message of {size} bytes exceeds the "
            f"{policy.max_message_bytes}-byte limit"
        )
    need = policy.required_tier(message.canonical())
    if need > have.level:
        why = "; ".join(have.reasons) or "no reason recorded"
        raise TierRequired(
            f"a transaction of value_usd={message.canonical().get('value_usd')} needs tier "
            f"{need} ({tier_name(need)}), this request runs at tier {have.level} "
            f"({have.name}): {why}"
        )
    requested = resolve_mode(message, requested_mode)
    mode, upgraded = needs_sync(message.kind, requested, have.level, always_sync=policy.always_sync)
    return Admission(mode, upgraded)
