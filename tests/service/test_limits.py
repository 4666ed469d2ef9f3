"""Limits: in-flight requests, submit rate, connections. Over a limit: an error, no crash."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import pytest

from sidecar.errors import QueueFull, Unavailable
from tests.service.conftest import Keys, gossip, start_service, stop_service
from tests.service.rawchannel import RawChannel
from transport.limits import ServiceLimits


async def test_in_flight_limit_answers_unavailable(tmp_path: Path, keys: Keys) -> None:
    svc = await start_service(tmp_path, keys, ServiceLimits(max_in_flight_per_channel=4))
    try:
        raw = await RawChannel.open(svc.port, keys.everything)
        for i in range(50):
            raw.send({"id": i, "method": "lease", "params": {"wait": 0.3}})
        codes = []
        for _ in range(50):
            reply = await raw.recv()
            assert reply is not None
            codes.append(reply["error"]["code"] if "error" in reply else "ok")
        assert codes.count("unavailable") >= 40
        assert "ok" in codes
        await raw.close()
    finally:
        await stop_service(svc)


async def test_submit_rate_limit_answers_queue_full(tmp_path: Path, keys: Keys) -> None:
    limits = ServiceLimits(submits_per_second=1.0, submit_burst=3)
    svc = await start_service(tmp_path, keys, limits)
    try:
        async with svc.connect() as client:
            results = await asyncio.gather(
                *(client.submit(gossip(i), "async") for i in range(10)), return_exceptions=True
            )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(e, QueueFull) for e in errors)
        assert 3 <= 10 - len(errors) <= 5
    finally:
        await stop_service(svc)


async def test_connections_over_the_limit_are_refused_others_served(
    tmp_path: Path, keys: Keys
) -> None:
    svc = await start_service(tmp_path, keys, ServiceLimits(max_connections=2))
    try:
        async with svc.connect() as a, svc.connect() as b:
            refused = 0
            try:
                async with svc.connect() as c:
                    await c.ping()
            except Unavailable:
                refused += 1
            assert refused == 1
            assert (await a.ping())["pong"]
            assert (await b.ping())["pong"]
        async with svc.connect() as again:
            assert (await again.ping())["pong"]
    finally:
        await stop_service(svc)


async def test_peer_that_does_not_read_replies_is_throttled_not_buffered(
    tmp_path: Path, keys: Keys
) -> None:
    svc = await start_service(tmp_path, keys)
    try:
        raw = await RawChannel.open(svc.port, keys.everything)
        raw.chan.pause_reading()  # never reads: the SSH window to it fills up
        total = 60_000
        for i in range(total):
            raw.send({"id": i, "method": "ping"})
        await asyncio.sleep(1.0)
        buffered = [s._chan.get_write_buffer_size() for s in svc.server._sessions if s._chan]
        assert buffered
        assert max(buffered) < 4 * 1024 * 1024  # 60 000 pong replies would be ~15 MB
        async with svc.connect() as other:
            assert (await other.ping())["pong"]
        raw.chan.resume_reading()
        ids = set()
        for _ in range(total):
            reply = await raw.recv(60)
            assert reply is not None
            ids.add(reply["id"])
        assert ids == set(range(total))
        await raw.close()
    finally:
        await stop_service(svc)


async def test_channel_limit_counts_open_channels_not_every_channel_ever_opened(
    tmp_path: Path, keys: Keys
) -> None:
    svc = await start_service(tmp_path, keys, ServiceLimits(max_channels_per_connection=2))
    try:
        raw = await RawChannel.open(svc.port, keys.everything)
        conn = raw.conn
        second = await RawChannel.open_on(conn)
        with pytest.raises(asyncssh.ChannelOpenError, match="too many channels"):
            await RawChannel.open_on(conn)
        # channels opened and closed one after another on one connection: never refused
        for i in range(10):
            second.chan.close()
            await second.wait_closed()
            second = await RawChannel.open_on(conn)
            second.send({"id": i, "method": "ping"})
            reply = await second.recv()
            assert reply is not None
            assert reply["result"]["pong"]
        await raw.close()
    finally:
        await stop_service(svc)
