"""The queue methods over a real SSH connection on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.errors import AlreadyConsumed, InvalidMessage, NotFound, UnknownKind
from tests.service.conftest import Service, block_import, gossip, telemetry


async def test_sync_submit_is_persisted_and_attributed_to_the_key(service: Service) -> None:
    async with service.connect(username="everything") as client:
        result = await client.submit(block_import(1), "sync")
        assert result["mode"] == "sync"
        assert result["persisted"] is True
        item = await client.pop()
    assert item is not None
    assert item["message_id"] == result["message_id"]
    assert item["message"] == block_import(1)
    fingerprint = service.keys.everything.get_fingerprint("sha256")
    assert item["submitted_by"] == f"everything {fingerprint}"


async def test_async_submit_is_not_persisted_but_served(service: Service) -> None:
    async with service.connect() as client:
        result = await client.submit(telemetry(2.5), "async")
        assert result["persisted"] is False
        assert await client.depth() == 1
        item = await client.pop()
    assert item is not None
    assert item["message"]["value"] == 2.5


async def test_client_supplied_submitted_by_is_refused(service: Service) -> None:
    async with service.connect() as client:
        with pytest.raises(InvalidMessage):
            await client.call(
                "submit", {"message": telemetry(), "mode": "sync", "submitted_by": "mallory"}
            )
        assert await client.depth() == 0


async def test_unknown_kind_gets_unknown_kind_error_and_changes_nothing(service: Service) -> None:
    async with service.connect() as client:
        with pytest.raises(UnknownKind):
            await client.submit({"kind": "teleport", "where": "mars"})
        assert await client.depth() == 0


async def test_pop_on_empty_queue_returns_none(service: Service) -> None:
    async with service.connect() as client:
        assert await client.pop() is None


async def test_priorities_first_then_fifo_within_a_priority(service: Service) -> None:
    async with service.connect() as client:
        await client.submit(telemetry(1), "sync")
        await client.submit(gossip(1), "sync")
        await client.submit(block_import(1), "sync")
        await client.submit(gossip(2), "sync")
        await client.submit(block_import(2), "sync")
        await client.submit(telemetry(2), "sync")
        order = []
        for _ in range(6):
            item = await client.pop()
            assert item is not None
            order.append(item["message"])
    assert order == [
        block_import(1),
        block_import(2),
        gossip(1),
        gossip(2),
        telemetry(1),
        telemetry(2),
    ]


async def test_lease_ack_consumes_and_second_ack_is_already_consumed(service: Service) -> None:
    async with service.connect() as client:
        await client.submit(block_import(7), "sync")
        lease = await client.lease(timeout=30)
        assert lease is not None
        await client.ack(lease["lease_id"])
        assert await client.depth() == 0
        with pytest.raises((AlreadyConsumed, NotFound)):
            await client.ack(lease["lease_id"])


async def test_release_returns_message_with_delivery_count_up(service: Service) -> None:
    async with service.connect() as client:
        await client.submit(block_import(3), "sync")
        first = await client.lease(timeout=30)
        assert first is not None
        await client.release(first["lease_id"])
        second = await client.lease(timeout=30)
        assert second is not None
        assert second["message_id"] == first["message_id"]
        assert second["delivery_count"] == first["delivery_count"] + 1
        await client.ack(second["lease_id"])


async def test_expired_lease_returns_message(service: Service) -> None:
    async with service.connect() as client:
        await client.submit(block_import(4), "sync")
        first = await client.lease(timeout=0.2)
        assert first is not None
        # wait= lets the server block until the expired lease frees the message
        second = await client.lease(timeout=30, wait=10)
        assert second is not None
        assert second["message_id"] == first["message_id"]
        await client.ack(second["lease_id"])


async def test_lease_wait_returns_a_message_submitted_meanwhile(service: Service) -> None:
    async with service.connect() as consumer, service.connect() as producer:
        waiting = asyncio.ensure_future(consumer.lease(timeout=30, wait=10))
        await asyncio.sleep(0.05)
        sent = await producer.submit(gossip(9), "sync")
        lease = await asyncio.wait_for(waiting, 20)
        assert lease is not None
        assert lease["message_id"] == sent["message_id"]


async def test_subscribe_with_several_consumers_delivers_each_message_once(
    service: Service,
) -> None:
    total = 60
    async with service.connect() as producer:
        consumers = [await service.connect().__aenter__() for _ in range(3)]
        try:
            subs = [await c.subscribe(credit=4, lease_timeout=30) for c in consumers]
            for i in range(total):
                await producer.submit(gossip(i), "async")
            seen: list[int] = []
            per_consumer = [0, 0, 0]

            async def drain(index: int) -> None:
                client, sub = consumers[index], subs[index]
                while len(seen) < total:
                    try:
                        delivery = await asyncio.wait_for(sub.next(), 0.5)
                    except TimeoutError:
                        continue
                    seen.append(delivery["message_id"])
                    per_consumer[index] += 1
                    await client.ack(delivery["lease_id"])
                    await sub.grant(1)

            await asyncio.wait_for(asyncio.gather(*(drain(i) for i in range(3))), 60)
        finally:
            for c in consumers:
                await c.close()
    assert len(seen) == total
    assert len(set(seen)) == total
    assert sum(per_consumer) == total


async def test_subscription_respects_credit(service: Service) -> None:
    async with service.connect() as client:
        for i in range(5):
            await client.submit(gossip(i), "sync")
        sub = await client.subscribe(credit=2)
        first = await asyncio.wait_for(sub.next(), 10)
        second = await asyncio.wait_for(sub.next(), 10)
        # no credit left: the ping reply comes back and no third delivery precedes it
        await client.ping()
        assert sub.queue.empty()
        depth = await client.depth_detail()
        assert depth["ready"] == 3
        assert depth["leased"] == 2
        await sub.grant(1)
        third = await asyncio.wait_for(sub.next(), 10)
        ids = [first["message_id"], second["message_id"], third["message_id"]]
        assert ids == sorted(ids)
        await sub.stop()


async def test_submit_batch_reports_each_message(service: Service) -> None:
    async with service.connect() as client:
        results = await client.submit_batch(
            [block_import(1), {"kind": "nope"}, telemetry(3)], "sync"
        )
    assert "message_id" in results[0]
    assert results[1]["error"]["code"] == "unknown_kind"
    assert "message_id" in results[2]


async def test_many_pipelined_sync_submits_all_acked(service: Service) -> None:
    async with service.connect() as client:
        results = await asyncio.gather(*(client.submit(gossip(i), "sync") for i in range(300)))
        ids = [r["message_id"] for r in results]
        assert len(set(ids)) == 300
        assert await client.depth() == 300


async def test_tier_and_stats_for_admin(service: Service) -> None:
    async with service.connect(service.keys.admin) as client:
        tier = await client.tier()
        assert tier["tier"] == 2
        stats = await client.stats()
        assert stats["depth"]["total"] == 0
        assert stats["service"]["connections"] >= 1
