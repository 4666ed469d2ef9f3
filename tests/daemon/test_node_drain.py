"""SIGTERM on the node endpoint, made deterministic: a request being answered is
finished and its reply delivered; idle connections are closed at once; new ones are
refused; a request that outlives the drain is cancelled, unanswered.

The endpoint runs in-process on a real unix socket over a real queue (real log in a
temp dir). The only addition is a gate in front of ``node_submit``, so a test knows a
request is in flight when it starts closing, without guessing with sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from sidecar.daemon.app import Sidecar
from sidecar.daemon.config import DaemonConfig, NodeEndpoint
from sidecar.daemon.node_endpoint import NodeEndpointServer
from sidecar.daemon.node_rpc import NodeLease
from sidecar.dedup import Submitted
from sidecar.messages import Kind

GOSSIP = {"Gossip": {"topic": "drain", "data": [1, 2, 3]}}
WAIT = 20.0  # bound on every await below; none is expected to come near it


class GatedSidecar:
    """The real sidecar's node methods; ``node_submit`` waits at a gate first."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    @property
    def instance(self) -> str:
        return self.sidecar.instance

    async def node_submit(self, message: object, **options: Any) -> Submitted:
        self.entered.set()
        await self.gate.wait()
        return await self.sidecar.node_submit(message, **options)

    async def node_lease(
        self, timeout: float, kinds: frozenset[Kind] | None = None
    ) -> NodeLease | None:
        return await self.sidecar.node_lease(timeout, kinds)

    async def node_ack(self, lease_id: int) -> None:
        await self.sidecar.node_ack(lease_id)

    async def node_release(self, lease_id: int) -> None:
        await self.sidecar.node_release(lease_id)

    async def node_wait_available(
        self, timeout: float, kinds: frozenset[Kind] | None = None
    ) -> bool:
        return await self.sidecar.node_wait_available(timeout, kinds)

    def node_tier(self) -> dict[str, Any]:
        return self.sidecar.node_tier()

    def node_health(self) -> dict[str, Any]:
        return self.sidecar.node_health()

    async def node_pop(self) -> dict[str, Any] | None:
        return await self.sidecar.node_pop()

    def node_depth(self) -> int:
        return self.sidecar.node_depth()

    def node_metrics(self) -> dict[str, Any]:
        return self.sidecar.node_metrics()


@contextlib.asynccontextmanager
async def gated_endpoint(
    tmp_path: Path, settings: dict[str, Any], *, gate_open: bool = False
) -> AsyncIterator[tuple[NodeEndpointServer, GatedSidecar, Path]]:
    """A real queue behind a `GatedSidecar`, served on ``node.sock`` with the
    ``[node]`` `settings`; the gate closed (requests wait) unless `gate_open`."""
    sidecar = Sidecar(DaemonConfig(data_dir=tmp_path, metrics=None))
    await sidecar.queue.open()
    backend = GatedSidecar(sidecar)
    if gate_open:
        backend.gate.set()
    server = NodeEndpointServer(backend, NodeEndpoint(socket=None, **settings))
    sock = tmp_path / "node.sock"
    await server.start_unix(sock, None)
    try:
        yield server, backend, sock
    finally:
        backend.gate.set()
        await server.close(drain=1.0)
        await sidecar.queue.close()


@pytest.fixture
async def endpoint(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[NodeEndpointServer, GatedSidecar, Path]]:
    """The endpoint on ``node.sock``, with the ``[node]`` settings given as the param."""
    async with gated_endpoint(tmp_path, getattr(request, "param", {})) as served:
        yield served


async def send_submit(sock: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    request = {"jsonrpc": "2.0", "id": 7, "method": "qssh_submitMessage", "params": [GOSSIP]}
    writer.write(orjson.dumps(request) + b"\n")
    await writer.drain()
    return reader, writer


# only close() ends idle ones
@pytest.mark.parametrize("endpoint", [{"first_request_timeout": 3600.0}], indirect=True)
async def test_a_request_in_flight_is_answered_before_close_returns(
    endpoint: tuple[NodeEndpointServer, GatedSidecar, Path],
) -> None:
    server, backend, sock = endpoint
    idle_reader, idle_writer = await asyncio.open_unix_connection(str(sock))
    reader, writer = await send_submit(sock)
    await asyncio.wait_for(backend.entered.wait(), WAIT)

    closing = asyncio.create_task(server.close(drain=WAIT))
    for _ in range(20):  # let close() run as far as it can without the gate
        await asyncio.sleep(0)
    assert not closing.done()  # it waits for the request being answered
    assert await asyncio.wait_for(idle_reader.read(), WAIT) == b""  # idle: closed at once
    with pytest.raises(OSError):  # no new connections while draining
        await asyncio.open_unix_connection(str(sock))

    backend.gate.set()
    reply = orjson.loads(await asyncio.wait_for(reader.readline(), WAIT))
    assert reply == {"jsonrpc": "2.0", "id": 7, "result": reply["result"]}
    assert isinstance(reply["result"], int)
    await asyncio.wait_for(closing, WAIT)
    assert backend.node_depth() == 1  # the answered submit is in the queue
    assert not sock.exists()
    for w in (writer, idle_writer):
        w.close()


async def test_a_request_outliving_the_drain_is_cancelled_unanswered(
    endpoint: tuple[NodeEndpointServer, GatedSidecar, Path],
) -> None:
    server, backend, sock = endpoint
    reader, writer = await send_submit(sock)
    await asyncio.wait_for(backend.entered.wait(), WAIT)

    await asyncio.wait_for(server.close(drain=0.2), WAIT)  # the gate never opens
    assert await asyncio.wait_for(reader.read(), WAIT) == b""  # no reply: never a false ack
    assert backend.node_depth() == 0
    writer.close()


async def _health(s: aiohttp.ClientSession, path: str) -> tuple[int, dict[str, Any]]:
    async with s.get(f"http://localhost{path}") as r:
        assert r.content_type == "application/json"
        return r.status, await r.json()


async def test_health_follows_readiness_draining_and_the_log(
    endpoint: tuple[NodeEndpointServer, GatedSidecar, Path],
) -> None:
    server, backend, sock = endpoint
    connector = aiohttp.UnixConnector(path=str(sock), limit=1)  # one keep-alive connection
    async with aiohttp.ClientSession(connector=connector) as s:
        status, health = await _health(s, "/health")
        assert (status, health["log"], health["ready"]) == (200, "ok", False)
        assert (await _health(s, "/health/readiness"))[0] == 503  # start not finished
        backend.sidecar.ready = True
        assert (await _health(s, "/health/readiness"))[0] == 200

        _reader, writer = await send_submit(sock)  # a request in flight holds the drain
        await asyncio.wait_for(backend.entered.wait(), WAIT)
        closing = asyncio.create_task(server.close(drain=WAIT))
        for _ in range(20):
            await asyncio.sleep(0)
        async with s.get("http://localhost/health") as r:  # the kept-alive connection
            assert r.status == 503
            assert (await r.json())["draining"] is True
            assert r.headers["Connection"] == "close"  # and it ends with this reply
        backend.gate.set()
        await asyncio.wait_for(closing, WAIT)
        writer.close()


async def test_health_is_503_once_the_log_is_not_serving(
    endpoint: tuple[NodeEndpointServer, GatedSidecar, Path],
) -> None:
    _, backend, sock = endpoint
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as s:
        await backend.sidecar.queue.close()
        status, health = await _health(s, "/health")
        assert (status, health["log"]) == (503, "failed")


@pytest.mark.parametrize("endpoint", [{"first_request_timeout": 0.2}], indirect=True)
async def test_a_connection_that_sends_nothing_is_closed(
    endpoint: tuple[NodeEndpointServer, GatedSidecar, Path],
) -> None:
    _, _, sock = endpoint
    reader, writer = await asyncio.open_unix_connection(str(sock))
    assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, its slot freed
    writer.close()
