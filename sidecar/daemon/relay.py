"""Links to the peers: each relays this sidecar's broadcast messages to one peer.

One task per peer connects as an ordinary ``qssh-queue`` client (host key pinned, our
identity key, the peer's ``authorized_keys`` grants us the ``peer`` role), then sends
what the peer lacks in id order, a batch per ``relay`` request. The peer answers after
its fsync; only then is the relay logged here (``relayed`` records) and the messages
leave the peer's backlog. A broken link gives its in-flight messages back; the task
reconnects with exponential backoff and jitter. Protocol and guarantees:
docs/relay.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from hardware.kme import KMEClient
from sidecar import QppValidatorQueue, QueueMessageWithProvenance, SidecarError
from sidecar.logs import printable
from transport.client import QueueClient
from transport.limits import ServiceLimits
from transport.qkd import QKDSettings
from transport.tiers import TierPolicy, tier_name

from .config import DaemonConfig
from .metrics import SidecarMetrics
from .peers_config import PeerConfig, RelaySettings

log = logging.getLogger(__name__)

KEEPALIVE = 5.0  # seconds between empty relay requests on an idle link (tier refresh)
# The items of one relay request add up to at most this (relay_backlog.wire_size), so the
# request stays under a receiver's default limits.max_frame_bytes (2 MiB) with room for
# its envelope; a single message (limits.max_message_bytes, 1 MiB) always fits.
REQUEST_BYTES = ServiceLimits().max_frame_bytes - 64 * 1024
PEER_ERROR_CHARS = 300  # of the reason a peer gives for refusing a message (logged)
LINK_ERROR_CHARS = 500  # of why a link went down: a peer's error reply is its to choose


@dataclass
class LinkState:
    connected: bool = False
    session_tier: int | None = None
    last_error: str | None = None
    connects: int = 0
    since: float | None = None  # wall-clock time the current session started
    qkd_failure: str | None = None  # why a link configured for tier 4 is not sealed


def backoff_delay(failures: int, settings: RelaySettings, jitter: float) -> float:
    """Seconds to wait after the `failures`-th failed attempt in a row: reconnect_min
    doubled per failure up to reconnect_max, then a uniform share of it in [half, all]
    (`jitter` in [0, 1)), so links cut together do not reconnect together."""
    ceiling: float = min(
        settings.reconnect_max, settings.reconnect_min * 2.0 ** min(failures - 1, 30)
    )
    return ceiling * (0.5 + jitter / 2)


class PeerLink:
    def __init__(
        self,
        peer: PeerConfig,
        settings: RelaySettings,
        queue: Callable[[], QppValidatorQueue],
        *,
        instance: str,
        node_tier: Callable[[], int],
        policy: TierPolicy,
        known_hosts: Path,
    ) -> None:
        self.peer = peer
        self.settings = settings
        self._queue = queue
        self._instance = instance
        self._node_tier = node_tier
        self._policy = policy
        self._known_hosts = known_hosts
        self.state = LinkState()
        self._task: asyncio.Task[None] | None = None
        self._warned_backlog = False
        self._link_tier: int | None = None  # min(session, node) held messages were judged at
        # A peer refusing every attempt the same way (its queue full) is said once, not
        # as a "connected" and a "link down" line per retry.
        self._said: str | None = None  # the last "link down" line's reason
        self._retry: bool = False  # the last session connected, then failed, and was said
        self._hushed = False  # this session's "connected" was not said: a retry
        self._progress = False  # this session relayed something, or had nothing to relay

    @property
    def name(self) -> str:
        return self.peer.name

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"peer:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- the link ------------------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncssh.Error, SidecarError, TimeoutError, ValueError) as exc:
                self._failed(exc)
            except Exception as exc:  # a bug must not end the relay for good
                log.exception("peer %s: link failed", self.name)
                self._failed(exc)
            if time.monotonic() - started > self.settings.reconnect_max:
                failures = 0  # a long session: start the backoff over
            failures += 1
            jitter = random.random()  # noqa: S311 (spreads reconnects, not a secret)
            await asyncio.sleep(backoff_delay(failures, self.settings, jitter))

    def _failed(self, exc: BaseException) -> None:
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        text = printable(text)  # a peer's error reply: one line, of bounded length
        if len(text) > LINK_ERROR_CHARS:
            text = text[:LINK_ERROR_CHARS] + "…"
        if self.state.connected:  # a session: a retry failing as the last one did is quiet
            if text != self._said or self._progress:
                log.warning("peer %s: link down: %s", self.name, text)
                self._said = text
            self._retry = True
        else:
            if self.state.last_error != text:
                log.warning("peer %s: link down: %s", self.name, text)
                self._said = text
            self._retry = False
        self.state.connected = False
        self.state.session_tier = None
        self._link_tier = None
        self.state.last_error = text

    async def _session(self) -> None:
        peer = self.peer
        qkd, kme = self._qkd()
        try:
            async with QueueClient.connect(
                peer.address.host,
                peer.address.port,
                username=peer.user or self._instance,
                client_keys=[str(peer.identity)],
                known_hosts=self._known_hosts,
                connect_timeout=self.settings.request_timeout,
                qkd=qkd,
            ) as client:
                self.state.qkd_failure = client.qkd_failure
                if client.qkd_failure is not None:
                    log.warning("peer %s: link not sealed: %s", self.name, client.qkd_failure)
                await self._relay_loop(client)
        finally:
            if kme is not None:
                await kme.aclose()

    def _qkd(self) -> tuple[QKDSettings | None, KMEClient | None]:
        q = self.peer.qkd
        if q is None:
            return None, None
        kme = KMEClient(q.kme, cert=str(q.certificate), key=str(q.key), ca=str(q.ca))
        return QKDSettings(kme=kme, sae_id=q.sae_id, peer_sae_id=q.peer_sae_id), kme

    async def _relay_loop(self, client: QueueClient) -> None:
        queue = self._queue()
        self._set_tier(await self._call(client, []))
        self.state.connected = True
        self.state.connects += 1
        self.state.since = time.time()
        self.state.last_error = None
        self._progress = False
        self._hushed = self._retry
        if not self._hushed:
            log.info("peer %s: connected, session tier %s", self.name, self.state.session_tier)
        # The relayed records of one batch are logged while the next batch travels:
        # one request in flight keeps the peer's order, the two fsyncs overlap.
        marking: asyncio.Future[None] | None = None
        try:
            while True:
                items = queue.relay_take(
                    self.name, self.settings.batch, self._why_held, REQUEST_BYTES
                )
                if not items:
                    self._progressed()
                    if not await queue.relay_wait(self.name, KEEPALIVE):
                        self._set_tier(await self._call(client, []))  # keepalive, tier refresh
                    continue
                try:  # a reply that cannot be read gives the batch back too
                    reply = await self._call(client, items)
                    self._set_tier(reply)
                    done, again = self._sort_results(items, reply)
                except BaseException:
                    queue.relay_give_back(self.name, items)
                    raise
                if again:
                    queue.relay_give_back(self.name, again)
                if marking is not None:
                    try:
                        await marking  # the previous batch's marks
                    except BaseException:
                        # they failed (relay_done gave that batch back); this batch's
                        # acknowledged items are not marked either: they wait again too
                        queue.relay_give_back(self.name, done)
                        raise
                    marking = None
                if done:
                    self._progressed()
                    marking = asyncio.ensure_future(queue.relay_done(self.name, done))
                if again:
                    # the first refused names the reason; not how many, which changes
                    # while the backlog grows and would make every retry a new line
                    raise SidecarError(f"peer {self.name} refused relayed {self.state.last_error}")
        finally:
            if marking is not None and not marking.done():
                marking.add_done_callback(_retrieve)

    def _progressed(self) -> None:
        if not self._progress:
            self._progress = True
            if self._hushed:
                self._hushed = False
                log.info(
                    "peer %s: connected, session tier %s (relaying again)",
                    self.name,
                    self.state.session_tier,
                )

    async def _call(
        self, client: QueueClient, items: list[QueueMessageWithProvenance]
    ) -> dict[str, Any]:
        wire = [
            {"origin_id": i.message_id, "mode": i.mode.value, "message": i.message.to_json()}
            for i in items
        ]
        # what the peer may forget: below it, nothing is ever sent to it again
        low = self._queue().relay_low_watermark(self.name)
        timeout = self.settings.request_timeout
        params = {"items": wire, "low_watermark": low}
        reply = await asyncio.wait_for(client.call("relay", params), timeout)
        if not isinstance(reply, dict):
            raise ValueError(f"peer {self.name} answered relay with {reply!r}")
        return reply

    def _set_tier(self, reply: dict[str, Any]) -> None:
        tier = reply.get("tier", {}).get("tier") if isinstance(reply.get("tier"), dict) else None
        if not isinstance(tier, int):
            raise ValueError(f"peer {self.name} did not say the session tier")
        self.state.session_tier = tier
        link = min(tier, self._node_tier())
        if link != self._link_tier:  # the session's or this node's tier moved
            self._link_tier = link
            self._queue().relay_unhold(self.name)

    def _sort_results(
        self, items: list[QueueMessageWithProvenance], reply: dict[str, Any]
    ) -> tuple[list[QueueMessageWithProvenance], list[QueueMessageWithProvenance]]:
        results = reply.get("results")
        if not isinstance(results, list) or len(results) != len(items):
            raise ValueError(f"peer {self.name} answered {results!r} for {len(items)} messages")
        done: list[QueueMessageWithProvenance] = []
        again: list[QueueMessageWithProvenance] = []
        for item, result in zip(items, results, strict=True):
            if isinstance(result, dict) and isinstance(result.get("message_id"), int):
                done.append(item)
            else:
                if not again:  # the first refused: why, as the peer said it (bounded)
                    error = result.get("error") if isinstance(result, dict) else None
                    why = (
                        f"{error.get('code')}: {error.get('message')}"
                        if isinstance(error, dict)
                        else repr(result)
                    )
                    if len(why) > PEER_ERROR_CHARS:
                        why = why[:PEER_ERROR_CHARS] + "…"
                    self.state.last_error = f"message {item.message_id}: {why}"
                again.append(item)
        return done, again

    def _why_held(self, item: QueueMessageWithProvenance) -> str | None:
        need = self._policy.required_tier(item.message.canonical())
        session = self.state.session_tier or 1
        have = min(session, self._node_tier())
        if need <= have:
            return None
        return (
            f"needs tier {need} ({tier_name(need)}); the link to {self.name} runs at tier "
            f"{have} (this node {self._node_tier()}, session {session})"
        )

    def check_backlog(self) -> None:
        """Warn once when the peer's backlog passes ``relay.backlog_warning``."""
        count = self._queue().relay_backlog(self.name).count
        over = count > self.settings.backlog_warning
        if over and not self._warned_backlog:
            log.warning(
                "peer %s lacks %d messages (relay.backlog_warning = %d); see docs/operations.md",
                self.name,
                count,
                self.settings.backlog_warning,
            )
        self._warned_backlog = over

    # -- observation ---------------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        queue = self._queue()
        backlog = queue.relay_backlog(self.name)
        return {
            "peer": self.name,
            "address": str(self.peer.address),
            "connected": self.state.connected,
            "session_tier": self.state.session_tier,
            "backlog": backlog.count,
            "backlog_bytes": backlog.bytes,
            "oldest_age": backlog.oldest_age,
            "in_flight": backlog.in_flight,
            "held": [{"message_id": k, "reason": v} for k, v in sorted(backlog.held.items())],
            "relayed_total": queue.relayed.get(self.name, 0),
            "connects": self.state.connects,
            "last_error": self.state.last_error,
            "qkd_failure": self.state.qkd_failure,
        }


class Peers:
    """Every link of this sidecar, started after the listener and stopped before the log
    closes; what ``peers`` and the metrics show."""

    def __init__(
        self,
        cfg: DaemonConfig,
        queue: Callable[[], QppValidatorQueue],
        node_tier: Callable[[], int],
    ) -> None:
        self.cfg = cfg
        pins = cfg.data_dir / "peers"
        self.links = [
            PeerLink(
                peer,
                cfg.relay,
                queue,
                instance=cfg.instance,
                node_tier=node_tier,
                policy=cfg.tiers.policy,
                known_hosts=peer.known_hosts or pins / f"{peer.name}.known_hosts",
            )
            for peer in cfg.peers
        ]

    def start(self) -> str:
        if not self.links:
            return "no peers"
        for link in self.links:
            if link.peer.host_key is not None:
                write_pin(link.peer, link._known_hosts)
            link.start()
        return ", ".join(f"{link.name} ({link.peer.address})" for link in self.links)

    async def stop(self) -> None:
        await asyncio.gather(*(link.stop() for link in self.links))

    def views(self) -> list[dict[str, Any]]:
        return [link.view() for link in self.links]

    def observe(self, metrics: SidecarMetrics) -> None:
        for link in self.links:
            view = link.view()
            metrics.observe_peer(
                link.name,
                connected=bool(view["connected"]),
                backlog=int(view["backlog"]),
                relayed=int(view["relayed_total"]),
                lag=float(view["oldest_age"] or 0.0),
            )
            link.check_backlog()


def _retrieve(fut: asyncio.Future[None]) -> None:
    """A relayed-records write left running when the link ended: its outcome is the
    queue's (a failed log stops the daemon); only keep asyncio from warning."""
    if not fut.cancelled():
        fut.exception()


def write_pin(peer: PeerConfig, path: Path) -> None:
    """The configured known_hosts line, as the file the client pins against."""
    assert peer.host_key is not None
    path.parent.mkdir(mode=0o700, exist_ok=True)
    text = peer.host_key.strip() + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
