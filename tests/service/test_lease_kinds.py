"""SSH ``lease`` and ``subscribe`` with ``kinds``, over a real SSH connection on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.errors import InvalidMessage, UnknownKind
from tests.service.conftest import Service, block_import, gossip, telemetry


async def test_lease_and_subscribe_by_kinds_leave_the_other_kinds(service: Service) -> None:
    async with service.connect() as client:
        ids = [
            (await client.submit(m, "sync"))["message_id"]
            for m in (telemetry(1), block_import(1), gossip(1), block_import(2), gossip(2))
        ]
        t1, b1, g1, b2, g2 = ids
        lease = await client.lease(timeout=30, kinds=["gossip", "telemetry"])
        assert lease is not None
        assert lease["message_id"] == g1  # normal before low, then id order
        sub = await client.subscribe(credit=5, kinds=["block_import"])
        pushed = [await asyncio.wait_for(sub.next(), 10) for _ in range(2)]
        assert [p["message_id"] for p in pushed] == [b1, b2]
        # credit is left, yet no other kind is pushed: the ping reply comes back first
        await client.ping()
        assert sub.queue.empty()
        popped = [await client.pop(), await client.pop(), await client.pop()]
        assert [p["message_id"] for p in popped if p is not None] == [g2, t1]
        assert await client.lease(timeout=30, wait=0.05, kinds=["vote"]) is None
        for held in (lease, *pushed):
            await client.ack(held["lease_id"])
        await sub.stop()
        assert await client.depth() == 0


@pytest.mark.parametrize(
    ("kinds", "error"), [(["blocks"], UnknownKind), ([], InvalidMessage), ("vote", InvalidMessage)]
)
async def test_bad_kinds_are_refused_and_change_nothing(
    service: Service, kinds: object, error: type[Exception]
) -> None:
    async with service.connect() as client:
        await client.submit(gossip(1), "sync")
        for method, params in (
            ("lease", {"timeout": 30, "kinds": kinds}),
            ("subscribe", {"credit": 1, "kinds": kinds}),
        ):
            with pytest.raises(error):
                await client.call(method, params)
        assert (await client.depth_detail())["leased"] == 0
        assert await client.depth() == 1
