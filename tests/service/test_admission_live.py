"""Connection admission on a real server: strangers never take a key holder's slot,
addresses that keep failing are penalized, idle strangers are closed after the
grace time, and every refusal is logged at a bounded rate."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from sidecar.errors import Unavailable
from tests.service.conftest import Keys, Service, start_service, stop_service
from transport.admission import AdmissionLimits, Penalties, Startups
from transport.client import AuthRefused
from transport.limits import ServiceLimits

ROOMY = Startups(100, 30, 200)


async def idle_socket(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def refused_before_version(port: int, source: str) -> bool:
    """True if the server closes a new connection from ``source`` without a word."""
    reader, writer = await idle_socket(port, source)
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


def connect_from(svc: Service, source: str, **kw: object) -> object:
    return svc.connect(ssh_options={"local_addr": (source, 0)}, **kw)


async def test_strangers_holding_every_startup_slot_never_take_a_session(
    tmp_path: Path, keys: Keys
) -> None:
    admission = AdmissionLimits(max_startups=Startups(20, 100, 20), per_source_max_startups=20)
    svc = await start_service(tmp_path, keys, ServiceLimits(max_connections=2, admission=admission))
    strangers = []
    try:
        async with svc.connect() as a:
            for _ in range(20):
                strangers.append(await idle_socket(svc.port, "127.0.0.20"))
            await asyncio.sleep(0.2)
            stats = (await a.stats())["service"]
            assert stats["unauthenticated"] == 20
            assert stats["connections"] == 1
            # every startup slot is taken: a 21st stranger (or anyone) is refused ...
            assert await refused_before_version(svc.port, "127.0.0.21")
            # ... but when one stranger leaves, a key holder gets the session slot
            strangers.pop()[1].close()
            await asyncio.sleep(0.2)
            async with svc.connect() as b:
                assert (await b.ping())["pong"]
                stats = (await a.stats())["service"]
                assert stats["connections"] == 2
                assert stats["refused"]["full"] >= 1
    finally:
        for _, w in strangers:
            w.close()
        await stop_service(svc)


async def test_an_address_that_keeps_failing_auth_is_penalized_others_are_not(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    admission = AdmissionLimits(
        max_startups=ROOMY, penalties=Penalties(authfail=5, min=15, max=600)
    )
    svc = await start_service(tmp_path, keys, ServiceLimits(admission=admission))
    caplog.set_level(logging.WARNING, logger="transport.server")
    try:
        for _ in range(4):
            with pytest.raises(AuthRefused):
                async with connect_from(svc, "127.0.0.30", key=keys.unknown):  # type: ignore[attr-defined]
                    pass
        await asyncio.sleep(0.3)  # the server sees the last connection end
        # 4 x 5 s accrued, more than 15 s left: refused before the version line
        assert await refused_before_version(svc.port, "127.0.0.30")
        with pytest.raises(Unavailable):
            async with connect_from(svc, "127.0.0.30"):  # type: ignore[attr-defined]
                pass
        # a key holder elsewhere is untouched
        async with svc.connect() as c:
            stats = (await c.stats())["service"]
        assert stats["penalized_sources"] == 1
        assert stats["refused"]["key"] == 4
        assert stats["refused"]["penalized"] >= 2
        # the first refusal is one line naming the key and the address; the rest wait
        # for the interval's summary
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "127.0.0.30" in lines[0]
        assert keys.unknown.get_fingerprint() in lines[0]
    finally:
        await stop_service(svc)
    # closing flushes the summary of the interval: one more line
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "127.0.0.30" in lines[1]


async def test_an_idle_stranger_is_closed_after_the_login_grace_time(
    tmp_path: Path, keys: Keys
) -> None:
    admission = AdmissionLimits(login_grace_seconds=0.5, max_startups=ROOMY)
    svc = await start_service(tmp_path, keys, ServiceLimits(admission=admission))
    try:
        reader, writer = await idle_socket(svc.port, "127.0.0.40")
        began = time.monotonic()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"SSH-2.0-")
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed by the server
        assert time.monotonic() - began < 30
        writer.close()
        async with svc.connect() as c:
            stats = (await c.stats())["service"]
        assert stats["unauthenticated"] == 0
    finally:
        await stop_service(svc)


async def test_a_flood_from_one_address_is_capped_per_source(tmp_path: Path, keys: Keys) -> None:
    admission = AdmissionLimits(per_source_max_startups=3, max_startups=ROOMY)
    svc = await start_service(tmp_path, keys, ServiceLimits(admission=admission))
    held = []
    try:
        for _ in range(3):
            held.append(await idle_socket(svc.port, "127.0.0.50"))
            assert (await asyncio.wait_for(held[-1][0].readline(), 10)).startswith(b"SSH-2.0-")
        assert await refused_before_version(svc.port, "127.0.0.50")
        async with connect_from(svc, "127.0.0.51") as c:  # type: ignore[attr-defined]
            stats = (await c.stats())["service"]
        assert stats["refused"]["per_source"] == 1
    finally:
        for _, w in held:
            w.close()
        await stop_service(svc)
