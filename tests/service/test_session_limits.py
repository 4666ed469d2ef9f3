"""Limits inside one authenticated session, and leases that belong to their holder.

- a lease can be acked or released only with the key that took it: another consumer
  gets ``not_found`` with no hint, the same key after a reconnect may; a malformed
  lease id is ``bad_request``;
- subscriptions per channel and waiting leases per connection are capped;
- a subscriber that does not read stops receiving pushes: what it holds stays bounded
  and its leases expire back to the queue.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sidecar.errors import InvalidMessage, NotFound, Unavailable
from tests.service.conftest import Keys, Service, gossip, start_service, stop_service
from tests.service.rawchannel import RawChannel
from transport.limits import ServiceLimits
from transport.tiers import DEFAULT_POLICY


async def leased_one(svc: Service) -> dict[str, Any]:
    async with svc.connect(svc.keys.producer) as p:
        await p.submit(gossip(1), "sync")
    async with svc.connect(svc.keys.consumer) as c:
        lease = await c.lease(timeout=60, detach=True)
    assert lease is not None
    return lease


async def test_another_consumer_cannot_ack_or_release_a_lease_and_learns_nothing(
    service: Service,
) -> None:
    keys = service.keys
    async with service.connect(keys.producer) as p:
        await p.submit(gossip(1), "sync")
    async with service.connect(keys.consumer) as holder, service.connect(keys.everything) as other:
        lease = await holder.lease(timeout=60)
        assert lease is not None
        wire = lease["lease_id"]
        n, token = wire.split(".")
        assert len(token) == 22
        # the holder's exact id, a guessed token, a never-issued number: all the same
        for attempt in (wire, f"{n}.{'A' * 22}", f"{int(n) + 1000}.{token}"):
            for end in (other.ack, other.release):
                with pytest.raises(NotFound) as err:
                    await end(attempt)
                assert err.value.message == f"no lease {attempt.split('.')[0]}"
        assert service.queue.depth()["leased"] == 1  # still the holder's
        await holder.ack(wire)
    assert service.queue.depth()["total"] == 0


async def test_the_same_key_may_ack_after_reconnecting(service: Service) -> None:
    lease = await leased_one(service)
    async with service.connect(service.keys.consumer) as again:
        assert await again.ack(lease["lease_id"]) is None
    assert service.queue.depth()["total"] == 0


async def test_a_malformed_lease_id_is_bad_request_and_changes_nothing(service: Service) -> None:
    lease = await leased_one(service)
    n = lease["lease_id"].split(".")[0]
    async with service.connect(service.keys.consumer) as c:
        for bad in (int(n), n, "abc", None, [n], f"{n}.", f"{n}.{'A' * 21}", f"{n}.{'!' * 22}"):
            for end in (c.ack, c.release):
                with pytest.raises(InvalidMessage, match="lease_id"):
                    await end(bad)
    assert service.queue.depth()["leased"] == 1


async def test_subscriptions_per_channel_are_capped(tmp_path: Path, keys: Keys) -> None:
    svc = await start_service(tmp_path, keys, ServiceLimits(max_subscriptions_per_channel=3))
    try:
        async with svc.connect(keys.consumer) as c:
            subs = [await c.subscribe(credit=1) for _ in range(3)]
            with pytest.raises(Unavailable, match=r"too many subscriptions .*limit 3"):
                await c.subscribe(credit=1)
            await subs[0].stop()
            await c.subscribe(credit=1)  # room again
    finally:
        await stop_service(svc)


async def test_waiting_leases_per_connection_are_capped_others_unaffected(
    tmp_path: Path, keys: Keys
) -> None:
    svc = await start_service(tmp_path, keys, ServiceLimits(max_waiting_leases_per_connection=4))
    try:
        async with svc.connect(keys.consumer) as c, svc.connect(keys.consumer) as d:
            waiting = [asyncio.create_task(c.lease(timeout=5, wait=30)) for _ in range(4)]
            await asyncio.sleep(0.3)
            with pytest.raises(Unavailable, match=r"too many lease requests waiting.*limit 4"):
                await c.lease(timeout=5, wait=30)
            assert await c.lease(timeout=5) is None  # not waiting: not counted
            other = asyncio.create_task(d.lease(timeout=5, wait=30))  # its own budget
            async with svc.connect(keys.producer) as p:
                for i in range(5):
                    await p.submit(gossip(i), "sync")
            got = await asyncio.wait_for(asyncio.gather(*waiting, other), 30)
            assert all(g is not None for g in got)
    finally:
        await stop_service(svc)


def big_gossip(i: int) -> dict[str, Any]:
    return {"kind": "gossip", "topic": f"t{i}", "data": base64.b64encode(bytes(12_000)).decode()}


async def test_a_subscriber_that_does_not_read_stops_receiving_and_its_leases_expire(
    tmp_path: Path, keys: Keys
) -> None:
    total = 600  # about 10 MB of pushes, five times the client's 2 MiB SSH window
    svc = await start_service(tmp_path, keys)
    try:
        async with svc.connect(keys.producer) as p:
            for start in range(0, total, 100):
                await p.submit_batch([big_gossip(i) for i in range(start, start + 100)], "async")
        raw = await RawChannel.open(svc.port, keys.consumer)
        raw.chan.pause_reading()  # never reads
        raw.send({"id": 1, "method": "subscribe", "params": {"credit": 10_000, "lease_timeout": 2}})
        deadline = time.monotonic() + 20
        held: list[int] = []
        while time.monotonic() < deadline and (len(held) < 6 or held[-1] != held[-6]):
            await asyncio.sleep(0.25)
            held.append(svc.queue.depth()["leased"])
        stalled_at = max(held)
        print(f"a subscriber with credit 10000 that never reads stalled at {stalled_at} leases")
        assert 0 < stalled_at < total // 2, held
        # the leases it holds but cannot read expire; another consumer gets them
        async with svc.connect(keys.everything) as other:
            got = 0
            deadline = time.monotonic() + 30
            while got < total - stalled_at + 1 and time.monotonic() < deadline:
                lease = await other.lease(timeout=60, wait=1)
                if lease is not None:
                    await other.ack(lease["lease_id"])
                    got += 1
            assert got == total - stalled_at + 1
        await raw.close()
    finally:
        await stop_service(svc)


async def test_max_message_bytes_holds_for_relayed_messages_too(tmp_path: Path, keys: Keys) -> None:
    limit = 200
    policy = replace(DEFAULT_POLICY, max_message_bytes=limit)
    svc = await start_service(tmp_path, keys, policy=policy)
    alg, b64 = keys.unknown.export_public_key().decode().split()[:2]
    with svc.server.authorized_keys.path.open("a") as f:
        f.write(f'roles="peer" {alg} {b64} bob\n')
    try:
        raw = await RawChannel.open(svc.port, keys.unknown)
        small = {"kind": "gossip", "topic": "t", "data": "aGk="}
        big = {"kind": "gossip", "topic": "t" * 300, "data": "aGk="}
        items = [{"origin_id": 1, "message": small}, {"origin_id": 2, "message": big}]
        raw.send({"id": 1, "method": "relay", "params": {"items": items}})
        reply = await raw.recv()
        assert reply is not None
        ok, refused = reply["result"]["results"]
        assert "message_id" in ok
        assert refused["error"]["code"] == "too_large"
        assert f"{limit}-byte limit" in refused["error"]["message"]
        assert svc.queue.depth()["total"] == 1
        await raw.close()
    finally:
        await stop_service(svc)
