"""Connections that go away mid-request: nothing acknowledged is lost, leases return."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from sidecar import QppValidatorQueue
from tests.service.conftest import Keys, Service, block_import, gossip, start_service
from tests.service.rawchannel import RawChannel


async def test_acked_sync_submit_is_in_the_log_after_client_vanishes(
    tmp_path: Path, keys: Keys
) -> None:
    svc = await start_service(tmp_path, keys)
    raw = await RawChannel.open(svc.port, keys.everything)
    for i in range(20):
        raw.send(
            {"id": i, "method": "submit", "params": {"message": block_import(i), "mode": "sync"}}
        )
    first = await raw.recv()
    assert first is not None
    assert "result" in first
    raw.conn.abort()  # gone without waiting for the other replies
    await svc.server.close()
    await svc.queue.close()

    reopened = await QppValidatorQueue.open("alice", svc.data_dir)
    try:
        ids = set()
        for _ in range(25):
            handle = await reopened.pop()
            if handle is None:
                break
            ids.add(handle.consume().message_id)
    finally:
        await reopened.close()
    assert first["result"]["message_id"] in ids


async def test_dropped_consumers_lease_returns_to_the_queue(service: Service) -> None:
    async with service.connect() as producer:
        sent = await producer.submit(gossip(1), "sync")
        consumer = await service.connect()
        lease = await consumer.lease(timeout=300)
        assert lease is not None
        assert lease["message_id"] == sent["message_id"]
        consumer.conn.abort()
        again = await producer.lease(timeout=30, wait=20)
        assert again is not None
        assert again["message_id"] == sent["message_id"]
        assert again["delivery_count"] == lease["delivery_count"] + 1
        await producer.ack(again["lease_id"])


async def test_dropped_subscribers_unacked_deliveries_return(service: Service) -> None:
    async with service.connect() as producer:
        for i in range(3):
            await producer.submit(gossip(i), "sync")
        subscriber = await service.connect()
        sub = await subscriber.subscribe(credit=3, lease_timeout=300)
        got = [await asyncio.wait_for(sub.next(), 10) for _ in range(3)]
        await subscriber.close()
        ids = set()
        for _ in range(3):
            lease = await producer.lease(timeout=30, wait=20)
            assert lease is not None
            ids.add(lease["message_id"])
        assert ids == {d["message_id"] for d in got}


async def test_server_close_answers_in_flight_then_refuses(tmp_path: Path, keys: Keys) -> None:
    svc = await start_service(tmp_path, keys)
    client = await svc.connect()
    pending = [asyncio.ensure_future(client.submit(gossip(i), "sync")) for i in range(50)]
    await asyncio.sleep(0)
    await svc.server.close()
    results = await asyncio.gather(*pending, return_exceptions=True)
    acked = [r["message_id"] for r in results if isinstance(r, dict)]
    await svc.queue.close()
    reopened = await QppValidatorQueue.open("alice", svc.data_dir)
    try:
        present = set()
        for _ in range(60):
            handle = await reopened.pop()
            if handle is None:
                break
            present.add(handle.consume().message_id)
    finally:
        await reopened.close()
    assert set(acked) <= present
    await client.close()


async def test_lease_waiting_when_its_channel_drops_is_given_back(service: Service) -> None:
    consumer = await service.connect()
    waiting = asyncio.ensure_future(consumer.lease(timeout=300, wait=10))
    await asyncio.sleep(0.1)
    consumer.conn.abort()
    async with service.connect() as producer:
        sent = await producer.submit(gossip(5), "sync")
        lease = await producer.lease(timeout=30, wait=20)
        assert lease is not None
        assert lease["message_id"] == sent["message_id"]
    with contextlib.suppress(Exception):
        await waiting
