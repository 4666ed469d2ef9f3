"""A channel holds a lease only while the queue does: a long-lived consumer channel
does not keep expired leases (and their messages) until it closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar import QppValidatorQueue
from sidecar.errors import AlreadyConsumed
from tests.service.conftest import gossip
from transport.auth import Principal, Role
from transport.limits import ServiceLimits, SubmitBucket
from transport.protocol import Request
from transport.service import ChannelState, QueueService
from transport.tiers import TierInfo

SHORT = 0.01  # seconds a lease lasts in these tests


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[QppValidatorQueue]:
    q = await QppValidatorQueue.open("alice", tmp_path)
    try:
        yield q
    finally:
        await q.close()


def consumer_channel() -> ChannelState:
    principal = Principal("c", "SHA256:test", "ssh-falcon512", frozenset(Role), "c")
    return ChannelState(principal, SubmitBucket(0.0, 10), lambda *_: None)


async def call(service: QueueService, channel: ChannelState, method: str, **params: Any) -> Any:
    return await service.call(channel, Request(1, method, params))


async def lease_until_expired(
    service: QueueService, channel: ChannelState, queue: QppValidatorQueue, n: int
) -> list[Any]:
    """Lease ``n`` messages for a moment each; return once they are all back."""
    await call(service, channel, "submit_batch", messages=[gossip(i) for i in range(n)])
    leased = [await call(service, channel, "lease", timeout=SHORT) for _ in range(n)]
    assert all(lease is not None for lease in leased)
    for _ in range(1000):  # the queue takes them back once they expire
        if await queue.wait_available(timeout=5.0) and queue.depth()["ready"] == n:
            break
        await asyncio.sleep(SHORT)
    assert queue.depth()["ready"] == n
    return leased


@pytest.mark.parametrize("method", ["ack", "release"])
async def test_a_late_ack_or_release_also_ends_the_channels_hold(
    queue: QppValidatorQueue, method: str
) -> None:
    service = QueueService(queue, ServiceLimits(), lambda: TierInfo(2))
    channel = consumer_channel()
    [leased] = await lease_until_expired(service, channel, queue, 1)
    with pytest.raises(AlreadyConsumed):
        await call(service, channel, method, lease_id=leased["lease_id"])
    assert channel.leases == {}


async def test_leases_that_expire_unacked_do_not_pile_up_on_the_channel(
    queue: QppValidatorQueue,
) -> None:
    service = QueueService(queue, ServiceLimits(), lambda: TierInfo(2))
    channel = consumer_channel()
    rounds, n = 4, 200
    for _ in range(rounds):
        await lease_until_expired(service, channel, queue, n)
        for _ in range(n):  # someone else consumes them once they are back
            handle = await queue.pop()
            assert handle is not None
            handle.consume()
    assert queue.depth()["total"] == 0
    # the last round's expired leases may linger until the next pruning, not all rounds'
    assert len(channel.leases) <= n + 256 < rounds * n
