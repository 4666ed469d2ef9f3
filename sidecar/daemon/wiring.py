"""The three parts the daemon wires together: queue core, hardware tier, SSH server.

Each part owns one teammate package's object and translates between it and the
daemon (metrics, notify, node endpoint), so ``app.py`` reads as the start/stop order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hardware.tier import Tier, TierDecision, decide
from sidecar.errors import TierRequired, Unavailable
from sidecar.messages import Mode, Priority, QueueMessage
from transport.auth import AuthorizedKeys
from transport.limits import ServiceLimits
from transport.server import QueueServer, ServerSettings, start_queue_server
from transport.service import TIER_NAMES, TierInfo, required_tier

from .config import DaemonConfig, Endpoint
from .metrics import SidecarMetrics

log = logging.getLogger(__name__)

NODE_PREFIX = "node:"


class QueuePart:
    def __init__(self, cfg: DaemonConfig, metrics: SidecarMetrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.wal_dir = cfg.data_dir / "queue"
        self.q: Any = None

    async def open(self) -> str:
        """Open and recover the log; a one-line account of what recovery found."""
        from sidecar import QppValidatorQueue  # noqa: PLC0415

        self.wal_dir.mkdir(mode=0o700, exist_ok=True)
        self.q = await QppValidatorQueue.open(self.cfg.instance, self.wal_dir)
        return f"restored {self.q.depth()} messages"

    def _queue(self) -> Any:
        if self.q is None:
            raise Unavailable("the queue is not open")
        return self.q

    async def submit(self, msg: Any, *, mode: Any, submitted_by: str) -> Any:
        return await self._queue().submit(msg, mode=mode, submitted_by=submitted_by)

    async def submit_from_node(self, raw: object, tier: int) -> int:
        msg = QueueMessage.from_json(raw, max_size=self.cfg.limits.max_message_bytes)  # type: ignore[arg-type]
        need = required_tier(msg.to_json())
        if need > tier:
            raise TierRequired(
                f"a transaction of value_usd={msg.to_json().get('value_usd')} needs tier "
                f"{need}, this sidecar runs at tier {tier}"
            )
        mode = msg.default_mode
        if mode is Mode.ASYNC and (tier >= 3 or self.cfg.durability.policy == "sync"):
            mode = Mode.SYNC
        mid = await self._queue().submit(
            msg, mode=mode, submitted_by=f"{NODE_PREFIX}{self.cfg.instance}"
        )
        return int(mid)

    async def pop_for_node(self) -> dict[str, Any] | None:
        item = await self._queue().pop()
        if item is None:
            return None
        prov = item.consume()
        view: dict[str, Any] = prov.to_json()
        view["message"] = prov.message.to_serde()
        return view

    def depth(self) -> int:
        return 0 if self.q is None else int(self.q.depth())

    def depth_by_priority(self) -> dict[int, int]:
        if self.q is None:
            return {}
        stats = self.q.stats()
        by = stats.get("depth_by_priority", {}) if isinstance(stats, dict) else {}
        return {int(k): int(v) for k, v in by.items()}

    def depth_summary(self) -> str:
        by = self.depth_by_priority()
        names = {int(p): p.name.lower() for p in Priority}
        return ", ".join(f"{names[p]} {by.get(p, 0)}" for p in sorted(names, reverse=True))

    def log_bytes(self) -> int | None:
        if self.q is None:
            return None
        stats = self.q.stats()
        value = stats.get("log_bytes") if isinstance(stats, dict) else None
        return int(value) if value is not None else None

    def stats(self) -> dict[str, Any]:
        if self.q is None:
            return {}
        stats = self.q.stats()
        return dict(stats) if isinstance(stats, dict) else {"stats": str(stats)}

    async def close(self) -> str:
        if self.q is None:
            return "not open"
        depth = self.q.depth()
        await self.q.close()
        self.q = None
        return f"{depth} messages kept"


class HardwarePart:
    def __init__(
        self,
        cfg: DaemonConfig,
        metrics: SidecarMetrics,
        on_change: Callable[[int | None, int, str], None],
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.on_change = on_change
        self.decision: TierDecision | None = None

    async def start(self) -> str:
        hw = self.cfg.hardware
        self.decision = decide([], None, floor=hw.floor, ceiling=hw.ceiling)
        self.metrics.observe_tier(None, int(self.decision.tier))
        return self.describe()

    def describe(self) -> str:
        d = self.decision
        if d is None:
            return "undecided"
        why = "; ".join(d.reasons) if d.reasons else "all sources healthy"
        return f"{int(d.tier)} {d.tier.name}" + (" (simulated)" if d.simulated else "") + f": {why}"

    def level(self) -> int:
        return int(self.decision.tier) if self.decision else int(Tier.HARDENED_PQ)

    def name(self) -> str:
        return TIER_NAMES.get(self.level(), "")

    def tier_info(self) -> TierInfo:
        d = self.decision
        return TierInfo(self.level(), tuple(d.reasons) if d else ())

    async def stop(self) -> None:
        return None


class ServerPart:
    def __init__(
        self,
        cfg: DaemonConfig,
        metrics: SidecarMetrics,
        queue: QueuePart,
        hardware: HardwarePart,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.queue = queue
        self.hardware = hardware
        self.server: QueueServer | None = None
        self._authorized: AuthorizedKeys | None = None

    def load_authorized_keys(self, path: Path) -> int:
        keys = AuthorizedKeys(path)
        self._authorized = keys
        if self.server is not None:
            self.server.authorized_keys = keys
        return len(keys)

    async def start(self, host_key: Any) -> Endpoint:
        limits = ServiceLimits(
            max_frame_bytes=self.cfg.limits.max_frame_bytes,
            max_in_flight_per_channel=self.cfg.limits.max_in_flight,
            max_connections=self.cfg.limits.max_connections,
        )
        settings = ServerSettings(
            host=self.cfg.listen.host,
            port=self.cfg.listen.port,
            authorized_keys_path=self.cfg.authorized_keys_path,
            limits=limits,
            tier_provider=self.hardware.tier_info,
            host_keys=(host_key.key,),
        )
        self.server = await start_queue_server(self.queue, settings)
        if self._authorized is not None:
            self.server.authorized_keys = self._authorized
        return Endpoint(self.cfg.listen.host, self.server.port)

    async def stop(self, drain: float) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None
