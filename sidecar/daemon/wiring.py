"""The three parts the daemon wires together: queue core, hardware tier, SSH server.

Each part owns one teammate package's object and translates between it and the
daemon (metrics, notify, node endpoint), so ``app.py`` reads as the start/stop order.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import asyncssh

from hardware.kme import KMEClient
from hardware.monitor import HardwareMonitor, HealthCheckedSource
from hardware.tier import Tier, TierDecision
from sidecar import (
    DedupLimits,
    Kind,
    Lease,
    Mode,
    NoClone,
    Priority,
    QppValidatorQueue,
    QueueLimits,
    QueueMessage,
    QueueMessageWithProvenance,
    Submitted,
    logs,
)
from sidecar.errors import LogCorrupt, Unavailable
from transport.auth import AuthorizedKey, AuthorizedKeys
from transport.entropy import EntropyMixer
from transport.protocol.sealing import RekeyPolicy
from transport.qkd import QKDSettings
from transport.queue_port import store
from transport.server import QueueServer, ServerSettings, start_queue_server
from transport.tiers import TierInfo, admit, message_from_wire, tier_name

from .config import DaemonConfig, Endpoint, service_limits
from .metrics import MetricsObserver, SidecarMetrics
from .node_rpc import NodeLease

log = logging.getLogger(__name__)
status = logging.getLogger("sidecar.daemon")  # the daemon's status lines (app.say)

NODE_PREFIX = "node:"


class QueuePart:
    """The queue core, plus the daemon's durability policy, shaped as the service's port."""

    def __init__(
        self, cfg: DaemonConfig, metrics: SidecarMetrics, tier: Callable[[], TierInfo]
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        metrics.queue_bytes_limit.set(cfg.limits.max_queue_bytes)
        self.tier = tier
        self.wal_dir = cfg.data_dir / "queue"
        self.q: QppValidatorQueue | None = None

    async def open(self, *, salvage: bool = False) -> str:
        """Open and recover the log; a one-line account of what recovery found."""
        limits = self.cfg.limits
        report = logs.ProgressReport("recovering the log", status, tty=sys.stdout.isatty())
        try:
            self.q = await QppValidatorQueue.open(
                self.cfg.instance,
                self.wal_dir,
                salvage=salvage,
                limits=QueueLimits(
                    max_messages=limits.max_queue_messages, max_bytes=limits.max_queue_bytes
                ),
                observer=MetricsObserver(self.metrics),
                compact_bytes=self.cfg.durability.compact_bytes,
                peers=[peer.name for peer in self.cfg.peers],
                dedup=DedupLimits(
                    window=self.cfg.durability.dedup_window,
                    max_entries=self.cfg.durability.dedup_max_entries,
                    max_peer_keys=self.cfg.relay.max_peer_keys,
                ),
                progress=report,
            )
        except LogCorrupt as e:
            raise LogCorrupt(
                e.message + ": `qssh-sidecar serve --salvage`",
                path=e.path,
                offset=e.offset,
                next_valid_offset=e.next_valid_offset,
            ) from None
        finally:
            report.close()
        return describe_recovery(self.q)

    def core(self) -> QppValidatorQueue:
        """The queue core itself (the relay links drive its relay backlog)."""
        return self._queue()

    def _queue(self) -> QppValidatorQueue:
        if self.q is None:
            raise Unavailable("the queue is not open")
        return self.q

    # ---- the service's QueuePort ------------------------------------------------------

    async def submit(
        self,
        msg: QueueMessage,
        *,
        submitted_by: str,
        mode: Mode,
        broadcast: bool = False,
        upgraded: bool = False,
    ) -> int:
        """An admitted submit (:func:`transport.tiers.admit` chose ``mode``)."""
        return await self._queue().submit(
            msg, mode=mode, submitted_by=submitted_by, broadcast=broadcast, upgraded=upgraded
        )

    async def submit_once(
        self,
        msg: QueueMessage,
        *,
        submitted_by: str,
        dedup_id: str,
        mode: Mode,
        broadcast: bool = False,
        upgraded: bool = False,
        origin: tuple[str, int] | None = None,
    ) -> Submitted:
        """An admitted submit with a dedup_id (``sidecar.queue.submit_once``)."""
        return await self._queue().submit_once(
            msg,
            submitted_by=submitted_by,
            dedup_id=dedup_id,
            mode=mode,
            broadcast=broadcast,
            upgraded=upgraded,
            origin=origin,
        )

    async def relay_watermark(self, peer: str, watermark: int) -> None:
        """`peer`'s low watermark (``sidecar.queue.relay_watermark``)."""
        await self._queue().relay_watermark(peer, watermark)

    def relay_floor(self, peer: str) -> int | None:
        return self._queue().relay_floor(peer)

    def relay_keys_full(self, peer: str) -> bool:
        return self._queue().relay_keys_full(peer)

    async def pop(self) -> NoClone[QueueMessageWithProvenance] | None:
        return await self._queue().pop()

    async def lease(
        self,
        timeout: float,  # noqa: ASYNC109
        kinds: Collection[Kind] | None = None,
    ) -> Lease | None:
        lease = await self._queue().lease(timeout, kinds)
        if lease is not None:
            self.metrics.leases.inc()
        return lease

    async def ack(self, lease_or_id: Lease | int) -> None:
        await self._queue().ack(lease_or_id)

    async def release(self, lease_or_id: Lease | int) -> None:
        await self._queue().release(lease_or_id)

    async def wait_available(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        kinds: Collection[Kind] | None = None,
    ) -> bool:
        return await self._queue().wait_available(timeout, kinds)

    def depth(self) -> dict[str, int]:
        """The core's depth detail: total, ready, leased, and ready per priority."""
        return {"total": 0} if self.q is None else self.q.depth()

    def total_depth(self) -> int:
        return int(self.depth()["total"])

    def stats(self) -> dict[str, Any]:
        return {} if self.q is None else self.q.stats()

    # ---- the node endpoint ------------------------------------------------------------

    async def submit_from_node(
        self,
        raw: object,
        *,
        mode: str = "default",
        dedup_id: str | None = None,
        broadcast: bool = False,
    ) -> Submitted:
        policy = self.cfg.submit_policy
        msg = message_from_wire(raw, policy)
        admission = admit(msg, mode, self.tier(), policy)
        return await store(
            self,
            msg,
            submitted_by=f"{NODE_PREFIX}{self.cfg.instance}",
            mode=admission.mode,
            upgraded=admission.upgraded,
            dedup_id=dedup_id,
            broadcast=broadcast,
        )

    async def lease_for_node(
        self,
        timeout: float,  # noqa: ASYNC109
        kinds: Collection[Kind] | None = None,
    ) -> NodeLease | None:
        """The next message (of one of `kinds` if given), leased, as the node sees it:
        serde form, provenance and ``lease_id``."""
        lease = await self.lease(timeout, kinds)
        if lease is None:
            return None
        view: dict[str, Any] = lease.item.to_json()
        view["message"] = lease.item.message.to_serde()
        view["lease_id"] = lease.lease_id
        view["lease_expires_at"] = time.time() + (lease.deadline - time.monotonic())
        return NodeLease(lease.lease_id, lease.deadline, view)

    async def submit_entropy(self, msg: QueueMessage, submitted_by: str) -> int:
        admission = admit(msg, Mode.SYNC, self.tier(), self.cfg.submit_policy)
        return await self._queue().submit(msg, mode=admission.mode, submitted_by=submitted_by)

    async def pop_for_node(self) -> dict[str, Any] | None:
        item = await self._queue().pop()
        if item is None:
            return None
        prov = item.consume()
        view: dict[str, Any] = prov.to_json()
        view["message"] = prov.message.to_serde()
        return view

    # ---- state for metrics and STATUS= ------------------------------------------------

    def depth_by_priority(self) -> dict[str, int]:
        if self.q is None:
            return {}
        d = self.q.depth()
        return {p.name.lower(): int(d.get(p.name.lower(), 0)) for p in Priority}

    def depth_summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.depth_by_priority().items())

    def failed(self) -> str | None:
        """Why the log stopped taking work (a failed fsync), or None."""
        fatal = None if self.q is None else self.q.failed
        return None if fatal is None else fatal.message

    def leased(self) -> int:
        return 0 if self.q is None else int(self.q.depth()["leased"])

    def log_bytes(self) -> int | None:
        return None if self.q is None else int(self.q.stats()["log_bytes"])

    def queue_bytes(self) -> int | None:
        """Memory accounted to queued messages (what `max_queue_bytes` limits)."""
        return None if self.q is None else int(self.q.stats()["bytes"])

    async def close(self, wait_for_space: float = 0.0) -> str:
        """Close the queue, writing its async messages (``AsyncMessagesLost`` if that
        still fails after ``wait_for_space`` seconds)."""
        if self.q is None:
            return "not open"
        depth = self.total_depth()
        q, self.q = self.q, None
        await q.close(wait_for_space=wait_for_space)
        return f"{depth} messages kept on disk"


def describe_recovery(q: QppValidatorQueue) -> str:
    rec = q.recovery
    restored = q.depth()["total"]
    if rec is None:
        return f"restored {restored} messages"
    parts = [f"{'created' if rec.created else 'recovered'} {q.path}"]  # as configured
    parts.append(
        f"{rec.records} records, restored {restored} messages, next id {q.stats()['next_id']}"
    )
    if rec.torn_bytes:
        parts.append(f"truncated a torn tail of {rec.torn_bytes} bytes")
    if rec.removed_temp:
        parts.append("removed a leftover compaction file")
    if rec.salvaged_to:
        parts.append(f"SALVAGED: damaged log kept at {rec.salvaged_to}")
    return "; ".join(parts)


class HardwarePart:
    """The hardware monitor: the tier now, and a callback on every change."""

    def __init__(
        self,
        cfg: DaemonConfig,
        metrics: SidecarMetrics,
        on_change: Callable[[int | None, int, str], None],
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.on_change = on_change
        self.monitor: HardwareMonitor | None = None
        self.decision: TierDecision | None = None

    async def start(self) -> str:
        self.monitor = HardwareMonitor(
            self.cfg.hardware, on_evaluated=lambda _: self.metrics.hardware_checks.inc()
        )
        self.decision = await self.monitor.start()
        self.metrics.observe_tier(None, int(self.decision.tier))
        if self.decision.below_floor:
            raise TierBelowFloor(
                f"hardware gives tier {int(self.decision.tier)}, below the configured floor "
                f"{int(self.cfg.hardware.floor)}: {'; '.join(self.decision.reasons)}"
            )
        self.monitor.subscribe(self._changed)
        return self.describe()

    def _changed(self, old: TierDecision | None, new: TierDecision) -> None:
        self.decision = new
        before = None if old is None else int(old.tier)
        self.metrics.observe_tier(before, int(new.tier))
        why = "; ".join(new.reasons) or "all hardware healthy"
        if new.below_floor:
            log.error("tier %d is below the configured floor: %s", new.tier, why)
        self.on_change(before, int(new.tier), why)

    def describe(self) -> str:
        d = self.decision
        if d is None:
            return "undecided"
        why = "; ".join(d.reasons) if d.reasons else "all hardware healthy"
        sim = " (simulated hardware)" if d.simulated else ""
        return f"{int(d.tier)} {tier_name(int(d.tier))}{sim}: {why}"

    def level(self) -> int:
        return int(self.decision.tier) if self.decision else int(Tier.HARDENED_PQ)

    def name(self) -> str:
        return tier_name(self.level())

    def acquire_qrng(self) -> HealthCheckedSource | None:
        return None if self.monitor is None else self.monitor.best_quantum_source()

    def evaluations(self) -> int:
        return 0 if self.monitor is None else self.monitor.evaluations

    def trigger(self) -> None:
        if self.monitor is not None:
            self.monitor.trigger()

    def tier_info(self) -> TierInfo:
        d = self.decision
        return TierInfo(self.level(), tuple(d.reasons) if d else ())

    async def stop(self) -> None:
        if self.monitor is not None:
            await self.monitor.stop()
            self.monitor = None


class TierBelowFloor(Unavailable):
    """The hardware cannot give the tier the operator set as the floor."""


class ServerPart:
    def __init__(
        self,
        cfg: DaemonConfig,
        metrics: SidecarMetrics,
        queue: QueuePart,
        hardware: HardwarePart,
        mixer: EntropyMixer,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.queue = queue
        self.hardware = hardware
        self.mixer = mixer
        self.server: QueueServer | None = None
        self._authorized: AuthorizedKeys | None = None
        self.peers_view: Callable[[], list[dict[str, Any]]] = list
        self._kme: KMEClient | None = None

    def _qkd(self) -> QKDSettings | None:
        """Tier-4 sealing: this node is the slave SAE on its ``[hardware.kme]``."""
        kme, sealing = self.cfg.hardware.kme, self.cfg.tiers.sealing
        if kme is None or not sealing.enabled:
            return None
        self._kme = KMEClient(kme.url, cert=kme.cert, key=kme.key, ca=kme.ca, timeout=kme.timeout)
        return QKDSettings(
            kme=self._kme,
            sae_id=kme.sae_id,
            aead=sealing.aead,
            rekey=RekeyPolicy(frames=sealing.rekey_frames, seconds=sealing.rekey_seconds),
            key_bits=max(256, kme.min_key_size),  # shorter QKD keys are refused
            entropy=self.mixer,
        )

    def load_authorized_keys(self, path: Path) -> int:
        keys = CountingAuthorizedKeys(path, self.metrics)
        self._authorized = keys
        if self.server is not None:
            self.server.authorized_keys = keys
        return len(keys)

    async def start(self, host_key: Any) -> Endpoint:
        limits = service_limits(self.cfg)
        settings = ServerSettings(
            host=self.cfg.listen.host,
            port=self.cfg.listen.port,
            authorized_keys_path=self.cfg.authorized_keys_path,
            authorized_keys=self._authorized,  # read once at start: its warnings once
            limits=limits,
            tier_provider=self.hardware.tier_info,
            host_keys=(host_key.key,),
            policy=self.cfg.submit_policy,
            qkd=self._qkd(),
            peers=self.peers_view,
        )
        self.server = await start_queue_server(self.queue, settings)
        return Endpoint(self.cfg.listen.host, self.server.port)

    def tier_notes(self, host_key_alg: str) -> list[str]:
        return tier_notes(self.cfg, host_key_alg)

    def connections(self) -> int | None:
        if self.server is None:
            return None
        return int(self.server.service.server_stats().get("connections", 0))

    def observe(self, metrics: SidecarMetrics) -> None:
        """Connection admission (strangers, penalties, refusals) into the metrics."""
        if self.server is not None:
            a = self.server.admission
            refused = self.server.refused_by_reason
            metrics.observe_admission(a.unauthenticated, a.penalized_sources(), refused)

    async def stop(self, drain: float) -> None:
        """Stop accepting and drain (bounded by ``limits.drain_seconds``, set from config)."""
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self._kme is not None:
            await self._kme.aclose()
            self._kme = None

    def tier_changed(self) -> None:
        if self.server is not None:
            self.server.tier_changed()


def tier_notes(cfg: DaemonConfig, host_key_alg: str) -> list[str]:
    """What caps the session tier here, said once at start."""
    notes = []
    for tier, algs in sorted(cfg.tiers.policy.host_keys.items()):
        if host_key_alg not in algs:
            notes.append(
                f"tiers: host key {host_key_alg} is not in tiers.host_keys.{tier} "
                f"({', '.join(algs)}): sessions are capped at tier {tier - 1}"
            )
            break
    kme = cfg.hardware.kme
    if kme is None:
        notes.append("tiers: tier-4 sealing off (no [hardware.kme]); sessions reach tier 3")
    elif not cfg.tiers.sealing.enabled:
        notes.append(
            "tiers: tier-4 sealing off (tiers.sealing.enabled = false); sessions reach tier 3"
        )
    else:
        notes.append(
            f"tiers: tier-4 sealing on, QKD keys from {kme.url} (this node is SAE "
            f"{kme.sae_id}); unsealed sessions run at tier 3 at most"
        )
    return notes


class CountingAuthorizedKeys(AuthorizedKeys):
    """Authorized keys whose refusals are counted as authentication failures."""

    def __init__(self, path: Path, metrics: SidecarMetrics) -> None:
        self._metrics = metrics
        super().__init__(path)

    def lookup_from(self, key: asyncssh.SSHKey, source: str | None) -> AuthorizedKey | None:
        entry = super().lookup_from(key, source)  # what the server authenticates by
        if entry is None:  # not listed, expired, or not from that address
            self._metrics.auth_failures.inc()
        return entry
