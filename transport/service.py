"""The queue service's methods (SPEC §5.3): one request in, one result out.

Independent of SSH: a :class:`ChannelState` stands for one ``qssh-queue`` channel
(its principal, its leases, its subscriptions, a way to push events). The SSH glue in
``transport.server`` feeds it requests and writes what comes back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidecar.dedup import check_dedup_id, relay_key, relay_principal
from sidecar.errors import (
    AlreadyConsumed,
    Forbidden,
    InvalidMessage,
    NotFound,
    QueueFull,
    SidecarError,
    Unavailable,
)
from sidecar.messages import Kind, Mode, parse_kinds
from sidecar.state import Lease
from transport.auth import PRINCIPAL_NAME, UNNAMED, Principal, Role
from transport.lease_tokens import LeaseTokens
from transport.limits import ServiceLimits, SubmitBucket, WaitingLeases
from transport.protocol import EventName, Params, ProtocolError, Request
from transport.queue_port import QueuePort, store
from transport.tiers import (
    DEFAULT_POLICY,
    MAX_UNSEALED_TIER,
    TIER_NAMES,
    TierInfo,
    TierPolicy,
    admit,
    effective_tier,
    message_from_wire,
)

__all__ = ["TIER_NAMES", "ChannelState", "QueueService", "TierInfo"]

log = logging.getLogger(__name__)

# held leases on one channel before the expired ones among them are dropped
PRUNE_HELD_LEASES_AT = 256

# What a method answers: a JSON object (or null), built at the wire boundary.
MethodResult = dict[str, Any] | None


def lease_view(lease: Lease, lease_id: str) -> dict[str, Any]:
    """A ``Lease`` as the wire shows it (``lease_id`` in its wire form, see
    ``transport.lease_tokens``); its monotonic deadline as wall-clock time."""
    view = lease.item.to_json()
    view["lease_id"] = lease_id
    view["lease_expires_at"] = time.time() + (lease.deadline - time.monotonic())
    return view


async def wait_for_message(
    queue: QueuePort, within: float, kinds: frozenset[Kind] | None = None
) -> None:
    """Return when the queue may have something (of ``kinds``) to lease, or after
    ``within`` s."""
    await queue.wait_available(within, kinds)


def kinds_param(params: Params) -> frozenset[Kind] | None:
    """``kinds``: absent (every kind) or a non-empty list of kind names."""
    raw = params.optional_raw("kinds")
    return None if raw is None else parse_kinds(raw)


@dataclass
class ServiceCounters:
    requests: int = 0
    errors: int = 0
    submits: int = 0
    deliveries: int = 0
    rate_limited: int = 0


class QueueService:
    """Method handlers shared by every channel of one server."""

    def __init__(
        self,
        queue: QueuePort,
        limits: ServiceLimits,
        tier: Callable[[], TierInfo],
        server_stats: Callable[[], dict[str, Any]] = dict,
        policy: TierPolicy = DEFAULT_POLICY,
        *,
        peers: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        self.queue = queue
        self.peers = peers
        self.limits = limits
        self.tier = tier  # the node tier
        self.policy = policy
        self.server_stats = server_stats
        self.counters = ServiceCounters()
        self.lease_tokens = LeaseTokens()
        self._handlers: dict[
            str, tuple[Role | None, Callable[[ChannelState, Params], Awaitable[MethodResult]]]
        ] = {
            "ping": (None, self._ping),
            "depth": (None, self._depth),
            "submit": (Role.PRODUCER, self._submit),
            "submit_batch": (Role.PRODUCER, self._submit_batch),
            "pop": (Role.CONSUMER, self._pop),
            "lease": (Role.CONSUMER, self._lease),
            "ack": (Role.CONSUMER, self._ack),
            "release": (Role.CONSUMER, self._release),
            "subscribe": (Role.CONSUMER, self._subscribe),
            "credit": (Role.CONSUMER, self._credit),
            "unsubscribe": (Role.CONSUMER, self._unsubscribe),
            "stats": (Role.ADMIN, self._stats),
            "tier": (Role.ADMIN, self._tier),
            "relay": (Role.PEER, self._relay),
            "peers": (Role.ADMIN, self._peers),
        }

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    async def call(self, channel: ChannelState, request: Request) -> MethodResult:
        """Run one request; raises :class:`SidecarError` with the wire code."""
        self.counters.requests += 1
        entry = self._handlers.get(request.method)
        if entry is None:
            raise ProtocolError(
                f"unknown method {request.method!r}; known: {', '.join(self.methods)}",
                request.id,
            )
        role, handler = entry
        if role is not None:
            channel.principal.require(role, request.method)
        return await handler(channel, Params(request.params, request.id))

    # ----- producer

    def effective(self, channel: ChannelState) -> TierInfo:
        """The tier a request on ``channel`` runs at: min(node, session). Kept per
        channel and recomputed only after a tier event (`ChannelState.tier_moved`)."""
        cached = channel.tier_cache
        if cached is None:
            cached = channel.tier_cache = effective_tier(self.tier(), channel.session_tier())
        return cached

    async def _submit_one(
        self,
        channel: ChannelState,
        raw: Any,
        mode: str,
        dedup_id: str | None = None,
        broadcast: bool = False,
    ) -> dict[str, Any]:
        message = message_from_wire(raw, self.policy)
        admission = admit(message, mode, self.effective(channel), self.policy)
        done = await store(
            self.queue,
            message,
            submitted_by=channel.principal.submitted_by,
            mode=admission.mode,
            upgraded=admission.upgraded,
            dedup_id=dedup_id,
            broadcast=broadcast,
        )
        self.counters.submits += 1
        reply: dict[str, Any] = {
            "message_id": done.message_id,
            "mode": admission.mode.value,
            "persisted": admission.mode is Mode.SYNC,
            "upgraded": admission.upgraded,
        }
        if dedup_id is not None:
            reply["duplicate"] = done.duplicate
        return reply

    def _take_rate(self, channel: ChannelState, n: int) -> None:
        if not channel.bucket.take(n):
            self.counters.rate_limited += 1
            raise QueueFull(
                f"submit rate limit of {self.limits.submits_per_second:g}/s per connection "
                "exceeded; slow down and retry"
            )

    async def _submit(self, channel: ChannelState, params: Params) -> MethodResult:
        raw = params.raw("message")
        mode = params.string("mode", "default", ("sync", "async", "default"))
        dedup_raw = params.optional_raw("dedup_id")
        dedup_id = None if dedup_raw is None else check_dedup_id(dedup_raw)
        broadcast = params.boolean("broadcast", False)
        params.finish()
        self._take_rate(channel, 1)
        return await self._submit_one(channel, raw, mode, dedup_id, broadcast)

    async def _submit_batch(self, channel: ChannelState, params: Params) -> MethodResult:
        raws = params.array("messages", self.limits.max_batch)
        mode = params.string("mode", "default", ("sync", "async", "default"))
        ids_raw = params.optional_raw("dedup_ids")
        broadcast = params.boolean("broadcast", False)
        params.finish()
        dedup_ids = _batch_dedup_ids(ids_raw, len(raws))
        self._take_rate(channel, max(1, len(raws)))

        async def one(raw: Any, dedup_id: str | None) -> dict[str, Any]:
            try:
                return await self._submit_one(channel, raw, mode, dedup_id, broadcast)
            except SidecarError as exc:
                return {"error": exc.to_wire()}

        # Concurrently, so the sync ones share one group commit.
        results = await asyncio.gather(*(one(r, d) for r, d in zip(raws, dedup_ids, strict=True)))
        return {"results": results}

    # ----- peer

    async def _peers(self, channel: ChannelState, params: Params) -> MethodResult:
        params.finish()
        return {"peers": self.peers()}

    async def _relay(self, channel: ChannelState, params: Params) -> MethodResult:
        """Messages a peer relays (docs/relay.md): each is admitted like a submit at this
        channel's tier, stored once per ``(peer, origin_id)`` and never relayed on."""
        items = params.array("items", self.limits.max_batch)
        low = params.optional_raw("low_watermark")
        if low is not None:
            low = params.integer("low_watermark", None, 1)
        params.finish()
        peer = channel.principal.name
        if peer == UNNAMED or not PRINCIPAL_NAME.fullmatch(peer):
            raise Forbidden(
                f"key {channel.principal.fingerprint} has the peer role but no name: give "
                'its authorized_keys line principal="<the peer\'s name>"'
            )
        self._take_rate(channel, max(1, len(items)))
        have = self.effective(channel)
        if low is not None:
            # logged before the batch's submits: the watermark is durable with them
            watermark = asyncio.ensure_future(self.queue.relay_watermark(peer, low))
            if self.queue.relay_keys_full(peer):
                # at its bound: the keys this watermark frees make room for the batch
                await watermark
        floor = self.queue.relay_floor(peer)

        async def one(raw: Any) -> dict[str, Any]:
            origin_id = raw.get("origin_id") if isinstance(raw, dict) else None
            try:
                if isinstance(origin_id, bool) or not isinstance(origin_id, int) or origin_id < 1:
                    raise InvalidMessage("each relayed item needs an 'origin_id' (integer >= 1)")
                if floor is not None and origin_id < floor:
                    raise InvalidMessage(
                        f"origin_id {origin_id} is below the low watermark {floor} {peer} sent "
                        "earlier: that message was relayed and acknowledged already"
                    )
                message = message_from_wire(raw.get("message"), self.policy)
                admission = admit(message, raw.get("mode"), have, self.policy)
                done = await store(
                    self.queue,
                    message,
                    submitted_by=relay_principal(peer),
                    mode=admission.mode,
                    upgraded=admission.upgraded,
                    dedup_id=relay_key(peer, origin_id)[1],
                    broadcast=False,  # one hop: never relayed on
                    origin=(peer, origin_id),
                )
            except SidecarError as exc:
                return {"origin_id": origin_id, "error": exc.to_wire()}
            self.counters.submits += 1
            return {
                "origin_id": origin_id,
                "message_id": done.message_id,
                "duplicate": done.duplicate,
            }

        # In order and concurrently: ids follow the order, sync ones share one fsync.
        results = await asyncio.gather(*(one(raw) for raw in items))
        if low is not None:
            await watermark
        return {"tier": have.to_wire(), "results": list(results)}

    # ----- consumer

    async def _pop(self, channel: ChannelState, params: Params) -> MethodResult:
        params.finish()
        handle = await self.queue.pop()
        if handle is None:
            return None
        self.counters.deliveries += 1
        return handle.consume().to_json()

    async def _lease_wait(
        self, lease_seconds: float, wait: float, kinds: frozenset[Kind] | None
    ) -> Lease | None:
        deadline = time.monotonic() + wait
        while True:
            lease = await self.queue.lease(lease_seconds, kinds)
            remaining = deadline - time.monotonic()
            if lease is not None or remaining <= 0:
                return lease
            await wait_for_message(self.queue, remaining, kinds)

    async def _lease(self, channel: ChannelState, params: Params) -> MethodResult:
        timeout = params.number("timeout", 30.0, 0.001, self.limits.max_lease_seconds)
        wait = params.number("wait", 0.0, 0.0, self.limits.max_wait_seconds)
        detach = params.boolean("detach", False)
        kinds = kinds_param(params)
        params.finish()
        if wait > 0:
            with channel.waiting.one():
                lease = await self._lease_wait(timeout, wait, kinds)
        else:
            lease = await self._lease_wait(timeout, 0.0, kinds)
        if lease is None:
            return None
        # A detached lease outlives the channel and ends only by ack, release or timeout.
        if not detach and not channel.hold(lease):
            await self.queue.release(lease)  # the channel went away meanwhile
            return None
        self.counters.deliveries += 1
        return self.lease_view(channel, lease)

    def lease_view(self, channel: ChannelState, lease: Lease) -> dict[str, Any]:
        wire = self.lease_tokens.wire(lease.lease_id, channel.principal.fingerprint)
        return lease_view(lease, wire)

    async def _ack(self, channel: ChannelState, params: Params) -> MethodResult:
        lease_id = params.raw("lease_id")
        params.finish()
        n = self.lease_tokens.resolve(lease_id, channel.principal.fingerprint)
        await channel.end(n, self.queue.ack)
        return {"acked": lease_id}

    async def _release(self, channel: ChannelState, params: Params) -> MethodResult:
        lease_id = params.raw("lease_id")
        params.finish()
        n = self.lease_tokens.resolve(lease_id, channel.principal.fingerprint)
        await channel.end(n, self.queue.release)
        return {"released": lease_id}

    async def _subscribe(self, channel: ChannelState, params: Params) -> MethodResult:
        credit = params.integer("credit", 1, 0, self.limits.max_subscription_credit)
        timeout = params.number("lease_timeout", 30.0, 0.001, self.limits.max_lease_seconds)
        kinds = kinds_param(params)
        params.finish()
        limit = self.limits.max_subscriptions_per_channel
        if len(channel.subscriptions) >= limit:
            raise Unavailable(
                f"too many subscriptions on this channel (limit {limit}); "
                "unsubscribe one or grant more credit instead"
            )
        sub = channel.subscribe(self, credit, timeout, kinds)
        return {"subscription": sub.id, "credit": sub.credit}

    async def _credit(self, channel: ChannelState, params: Params) -> MethodResult:
        sub_id = params.integer("subscription")
        n = params.integer("n", None, 1, self.limits.max_subscription_credit)
        params.finish()
        sub = channel.subscription(sub_id)
        sub.grant(n, self.limits.max_subscription_credit)
        return {"subscription": sub.id, "credit": sub.credit}

    async def _unsubscribe(self, channel: ChannelState, params: Params) -> MethodResult:
        sub_id = params.integer("subscription")
        params.finish()
        channel.subscription(sub_id).stop()
        channel.subscriptions.pop(sub_id, None)
        return {"subscription": sub_id, "stopped": True}

    # ----- anyone / admin

    async def _ping(self, channel: ChannelState, params: Params) -> MethodResult:
        params.finish()
        p = channel.principal
        return {
            "pong": True,
            "time": time.time(),
            "user": p.username,
            "principal": p.name,
            "fingerprint": p.fingerprint,
            "roles": sorted(r.value for r in p.roles),
            "limits": self.limits.to_wire(),
        }

    async def _depth(self, channel: ChannelState, params: Params) -> MethodResult:
        params.finish()
        return self.depth_snapshot()

    def depth_snapshot(self) -> dict[str, int]:
        return self.queue.depth()

    def stats_snapshot(self) -> dict[str, Any]:
        c = self.counters
        return {
            "queue": orjson.loads(orjson.dumps(self.queue.stats(), default=str)),
            "depth": self.depth_snapshot(),
            "tier": self.tier().to_wire(),
            "service": {
                "requests": c.requests,
                "errors": c.errors,
                "submits": c.submits,
                "deliveries": c.deliveries,
                "rate_limited": c.rate_limited,
                **self.server_stats(),
            },
        }

    async def _stats(self, channel: ChannelState, params: Params) -> MethodResult:
        params.finish()
        return self.stats_snapshot()

    async def _tier(self, channel: ChannelState, params: Params) -> MethodResult:
        params.finish()
        return self.tier_view(channel)

    def tier_view(self, channel: ChannelState) -> dict[str, Any]:
        """Effective tier (top level), and the node and session tiers with their reasons."""
        node, session = self.tier(), channel.session_tier()
        view = effective_tier(node, session).to_wire()
        view["node"] = node.to_wire()
        view["session"] = {**session.to_wire(), **channel.session_detail}
        return view


def _batch_dedup_ids(raw: Any, count: int) -> list[str | None]:
    """``dedup_ids``: absent, or one entry (a dedup_id or null) per message."""
    if raw is None:
        return [None] * count
    if not isinstance(raw, list) or len(raw) != count:
        raise InvalidMessage(f"'dedup_ids' must be an array of {count} entries (string or null)")
    return [None if d is None else check_dedup_id(d) for d in raw]


_subscription_ids = itertools.count(1)


class ChannelSubscription:
    """Leases messages for one channel while it has credit, and pushes each one."""

    def __init__(
        self,
        channel: ChannelState,
        service: QueueService,
        credit: int,
        timeout: float,
        kinds: frozenset[Kind] | None = None,
    ):
        self.id = next(_subscription_ids)
        self.channel = channel
        self.service = service
        self.credit = credit
        self.lease_timeout = timeout
        self.kinds = kinds  # only these kinds are pushed; None: every kind
        self._has_credit = asyncio.Event()
        if credit > 0:
            self._has_credit.set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def grant(self, n: int, limit: int) -> None:
        self.credit = min(limit, self.credit + n)
        self._has_credit.set()

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        queue = self.service.queue
        try:
            while True:
                await self._has_credit.wait()
                # a peer that does not read its pushes gets no more (and leases no more)
                await self.channel.writable()
                lease = await queue.lease(self.lease_timeout, self.kinds)
                if lease is None:
                    await wait_for_message(queue, 1.0, self.kinds)
                    continue
                if not self.channel.hold(lease):
                    await queue.release(lease)
                    return
                self.credit -= 1
                if self.credit <= 0:
                    self._has_credit.clear()
                self.service.counters.deliveries += 1
                view = self.service.lease_view(self.channel, lease)
                self.channel.push(EventName.DELIVERY, {"subscription": self.id, **view})
                # let the push be written (and the write buffer pause us) before the next
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except SidecarError as exc:
            ended = {"subscription": self.id, **exc.to_wire()}
            self.channel.push(EventName.SUBSCRIPTION_ENDED, ended)
        except Exception:
            log.exception("subscription %s failed", self.id)
            self.channel.push(
                EventName.SUBSCRIPTION_ENDED,
                {"subscription": self.id, "code": "internal", "message": "subscription failed"},
            )


@dataclass
class ChannelState:
    """One ``qssh-queue`` channel: who is on it, what it holds, how to push to it."""

    principal: Principal
    bucket: SubmitBucket
    push: Callable[[str, dict[str, Any]], None]
    leases: dict[int, Lease] = field(default_factory=dict)
    subscriptions: dict[int, ChannelSubscription] = field(default_factory=dict)
    closed: bool = False
    session_tier: Callable[[], TierInfo] = lambda: TierInfo(MAX_UNSEALED_TIER)
    session_detail: dict[str, Any] = field(default_factory=dict)
    # lease(wait > 0) requests waiting; shared by the channels of one connection
    waiting: WaitingLeases = field(default_factory=lambda: WaitingLeases(ServiceLimits()))
    # the effective tier, until the node or session tier moves (see QueueService.effective)
    tier_cache: TierInfo | None = field(default=None, init=False, repr=False)
    _prune_at: int = field(default=PRUNE_HELD_LEASES_AT, init=False, repr=False)
    _writable: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        self._writable.set()

    def tier_moved(self) -> None:
        """The node tier or this session's changed: recompute the effective tier."""
        self.tier_cache = None

    def pause_pushes(self) -> None:
        """The peer's receive window is full: subscriptions stop leasing and pushing."""
        self._writable.clear()

    def resume_pushes(self) -> None:
        self._writable.set()

    async def writable(self) -> None:
        await self._writable.wait()

    def hold(self, lease: Lease) -> bool:
        """Keep ``lease`` until ack/release; false once the channel is closed (then the
        caller gives it back, or it would stay leased until its timeout)."""
        if self.closed:
            return False
        if len(self.leases) >= self._prune_at:
            self._forget_expired()
        self.leases[lease.lease_id] = lease
        return True

    def _forget_expired(self) -> None:
        """Drop leases past their deadline: the queue has taken those messages back.
        Amortised: the next pass waits until the channel holds twice as many."""
        now = time.monotonic()
        self.leases = {k: v for k, v in self.leases.items() if v.deadline > now}
        self._prune_at = max(PRUNE_HELD_LEASES_AT, 2 * len(self.leases))

    async def end(self, n: int, how: Callable[[Lease | int], Awaitable[None]]) -> None:
        """Ack or release (``how``) lease ``n`` (already checked to be this key's).
        The channel stops holding it once the queue has ended it or says it is no
        longer held (a late ack), but not when the queue could not log the ack (it may
        be retried). One this channel does not hold (detached, or taken before a
        reconnect) goes to the queue by number."""
        try:
            await how(self.leases.get(n, n))
        except (AlreadyConsumed, NotFound):
            self.leases.pop(n, None)
            raise
        self.leases.pop(n, None)

    def subscribe(
        self,
        service: QueueService,
        credit: int,
        timeout: float,
        kinds: frozenset[Kind] | None = None,
    ) -> ChannelSubscription:
        sub = ChannelSubscription(self, service, credit, timeout, kinds)
        self.subscriptions[sub.id] = sub
        return sub

    def subscription(self, sub_id: int) -> ChannelSubscription:
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise NotFound(f"no subscription {sub_id} on this channel")
        return sub

    async def close(self, queue: QueuePort) -> int:
        """Stop pushes and give every lease still held back to the queue."""
        self.closed = True
        for sub in self.subscriptions.values():
            sub.stop()
        self.subscriptions.clear()
        released = 0
        leases, self.leases = list(self.leases.values()), {}
        for lease in leases:
            try:
                await queue.release(lease)
                released += 1
            except SidecarError:
                pass  # acked elsewhere or expired meanwhile: nothing to give back
        return released
