"""Prometheus metrics of one sidecar, served on a loopback address.

Counters and histograms are fed by events (queue observer, server hooks, tier
changes); gauges that mirror state (depth per priority, log and queue bytes) are refreshed
from the event loop by :meth:`SidecarMetrics.refresh`, so the exporter thread never
reads queue state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)

from sidecar import Mode, QueueObserver

from .config import Endpoint

PRIORITIES = {100: "critical", 75: "high", 50: "normal", 25: "low"}
FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class SidecarMetrics:
    def __init__(self, instance: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.depth = Gauge(
            "qssh_queue_depth", "Messages waiting, by priority", ["priority"], registry=r
        )
        self.leased = Gauge("qssh_queue_leased", "Messages currently leased", registry=r)
        self.log_bytes = Gauge("qssh_wal_bytes", "Size of the write-ahead log", registry=r)
        # the queue's own accounting beside the process's RSS (process_resident_memory_bytes)
        self.queue_bytes = Gauge(
            "qssh_queue_bytes",
            "Memory the queued messages are accounted for (what max_queue_bytes limits)",
            registry=r,
        )
        self.queue_bytes_limit = Gauge(
            "qssh_queue_bytes_limit", "The max_queue_bytes limit", registry=r
        )
        ProcessCollector(registry=r)
        self.fsync_seconds = Histogram(
            "qssh_wal_fsync_seconds", "Latency of one log fsync", buckets=FSYNC_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "qssh_wal_group_commit_batch_size",
            "Records made durable by one group-commit fsync",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.compactions = Counter("qssh_wal_compactions", "Log compactions", registry=r)
        self.peer_connected = Gauge(
            "qssh_peer_connected", "1 while the relay link to the peer is up", ["peer"], registry=r
        )
        self.peer_backlog = Gauge(
            "qssh_peer_backlog", "Broadcast messages the peer still lacks", ["peer"], registry=r
        )
        self.peer_relayed = Counter(
            "qssh_peer_relayed", "Messages the peer acknowledged since start", ["peer"], registry=r
        )
        self._peer_relayed_seen: dict[str, int] = {}
        self.peer_lag = Gauge(
            "qssh_peer_lag_seconds",
            "Age of the oldest broadcast message the peer lacks (0 when it lacks none)",
            ["peer"],
            registry=r,
        )
        self.submits = Counter("qssh_submits", "Accepted submits, by mode", ["mode"], registry=r)
        self.upgrades = Counter(
            "qssh_submit_upgrades", "Async submits made sync by policy or tier", registry=r
        )
        self.pops = Counter("qssh_pops", "Messages consumed by pop", registry=r)
        self.leases = Counter("qssh_leases", "Leases granted", registry=r)
        self.acks = Counter("qssh_acks", "Leases acknowledged", registry=r)
        self.redeliveries = Counter(
            "qssh_redeliveries", "Messages returned by an expired or released lease", registry=r
        )
        self.connections = Gauge("qssh_connections", "Open SSH connections", registry=r)
        self.auth_failures = Counter(
            "qssh_auth_failures", "Rejected SSH authentication attempts", registry=r
        )
        self.unauthenticated = Gauge(
            "qssh_ssh_unauthenticated", "SSH connections not yet authenticated", registry=r
        )
        self.penalized_sources = Gauge(
            "qssh_ssh_penalized_sources", "Addresses refused now for a penalty", registry=r
        )
        self.refused = Counter(
            "qssh_ssh_refused", "SSH connections refused, by reason", ["reason"], registry=r
        )
        self._refused_seen: dict[str, int] = {}
        self.node_requests = Counter(
            "qssh_node_rpc_requests", "JSON-RPC requests from the node", ["method"], registry=r
        )
        self.tier = Gauge("qssh_security_tier", "Current security tier (1-4)", registry=r)
        self.tier_changes = Counter(
            "qssh_security_tier_changes", "Security tier changes", ["direction"], registry=r
        )
        self.hardware_checks = Counter(
            "qssh_hardware_checks",
            "Hardware evaluations (startup, hotplug, periodic health check)",
            registry=r,
        )
        self.entropy_shares = Counter(
            "qssh_entropy_shares", "entropy_share messages published from the QRNG", registry=r
        )
        self.entropy_publishing = Gauge(
            "qssh_entropy_publishing", "1 while entropy_share messages are published", registry=r
        )
        self.entropy_failures = Counter(
            "qssh_entropy_source_failures",
            "QRNG reads refused (health test failure, timeout, unplugged)",
            registry=r,
        )
        info = Gauge("qssh_sidecar_info", "Sidecar instance", ["instance"], registry=r)
        info.labels(instance=instance).set(1)
        for name in PRIORITIES.values():
            self.depth.labels(priority=name).set(0)
        # the labelled children, looked up once: a submit only increments one
        self._submits_by_mode = {mode: self.submits.labels(mode=mode) for mode in ("sync", "async")}
        for d in ("up", "down"):
            self.tier_changes.labels(direction=d)
        self._server: Any = None

    # ---- events ------------------------------------------------------------------

    def observe_fsync(self, seconds: float, batch_size: int) -> None:
        self.fsync_seconds.observe(seconds)
        self.batch_size.observe(batch_size)

    def observe_submit(self, mode: str, upgraded: bool = False) -> None:
        child = self._submits_by_mode.get(mode)
        (child if child is not None else self.submits.labels(mode=mode)).inc()
        if upgraded:
            self.upgrades.inc()

    def observe_tier(self, old: int | None, new: int) -> None:
        self.tier.set(new)
        if old is not None and old != new:
            self.tier_changes.labels(direction="up" if new > old else "down").inc()

    # ---- state mirrored from the queue ------------------------------------------

    def observe_peer(
        self, peer: str, *, connected: bool, backlog: int, relayed: int, lag: float
    ) -> None:
        """One relay link's state (``relayed``: its running total since start)."""
        self.peer_connected.labels(peer=peer).set(1 if connected else 0)
        self.peer_backlog.labels(peer=peer).set(backlog)
        self.peer_lag.labels(peer=peer).set(lag)
        seen = self._peer_relayed_seen.get(peer, 0)
        if relayed > seen:
            self.peer_relayed.labels(peer=peer).inc(relayed - seen)
            self._peer_relayed_seen[peer] = relayed

    def refresh(
        self,
        depth_by_priority: Mapping[str, int],
        leased: int,
        log_bytes: int | None,
        connections: int | None,
        queue_bytes: int | None = None,
    ) -> None:
        for name in PRIORITIES.values():
            self.depth.labels(priority=name).set(depth_by_priority.get(name, 0))
        self.leased.set(leased)
        if log_bytes is not None:
            self.log_bytes.set(log_bytes)
        if connections is not None:
            self.connections.set(connections)
        if queue_bytes is not None:
            self.queue_bytes.set(queue_bytes)

    def observe_admission(
        self, unauthenticated: int, penalized_sources: int, refused: Mapping[str, int]
    ) -> None:
        """The SSH server's admission state; ``refused`` are its running totals."""
        self.unauthenticated.set(unauthenticated)
        self.penalized_sources.set(penalized_sources)
        for reason, total in refused.items():
            new = total - self._refused_seen.get(reason, 0)
            if new > 0:
                self.refused.labels(reason=reason).inc(new)
            self._refused_seen[reason] = total

    # ---- exporter ----------------------------------------------------------------

    def serve(self, endpoint: Endpoint) -> None:
        """Start the exporter thread (the address was checked to be loopback)."""
        try:
            server, _thread = start_http_server(
                endpoint.port, endpoint.host, registry=self.registry
            )
        except OSError as e:  # name the address, as the SSH listener's error does
            where = f"{endpoint.host}:{endpoint.port}"
            raise OSError(e.errno, f"metrics: cannot listen on {where}: {e.strerror}") from None
        self._server = server

    @property
    def bound_port(self) -> int | None:
        return None if self._server is None else int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def snapshot(self) -> dict[str, float]:
        """Flat name -> value view, for ``qssh_getMetrics``."""
        out: dict[str, float] = {}
        for family in self.registry.collect():
            for s in family.samples:
                if s.name.endswith("_created") or s.name.endswith("_bucket"):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out


class MetricsObserver(QueueObserver):
    """The queue core's hooks, counted. Called on the event loop; never raises."""

    def __init__(self, metrics: SidecarMetrics) -> None:
        self.m = metrics

    def on_fsync(self, seconds: float, batch_records: int) -> None:
        self.m.observe_fsync(seconds, batch_records)

    def on_submit(self, mode: Mode, upgraded: bool) -> None:
        self.m.observe_submit(mode.value, upgraded)

    def on_consume(self, how: str) -> None:
        (self.m.acks if how == "ack" else self.m.pops).inc()

    def on_redelivery(self, count: int) -> None:
        self.m.redeliveries.inc(count)

    def on_release(self) -> None:
        self.m.redeliveries.inc()

    def on_compaction(self, seconds: float, bytes_before: int, bytes_after: int) -> None:
        self.m.compactions.inc()

    def on_log_bytes(self, size: int) -> None:
        self.m.log_bytes.set(size)
