"""The node endpoint's edges: what each connection costs and that nothing outlives its
connection. In-process, on a real unix socket over a real queue, with the gate of
``test_node_drain`` in front of ``node_submit`` so a test knows a request is in flight.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest

from sidecar.daemon import node_endpoint
from sidecar.daemon.node_endpoint import NodeEndpointServer
from tests.daemon.test_node_drain import GOSSIP, GatedSidecar, gated_endpoint

WAIT = 10.0  # bound on every wait below; none is expected to come near it

Endpoint = tuple[NodeEndpointServer, GatedSidecar, Path]


@pytest.fixture
async def ep(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Endpoint]:
    """The endpoint on ``node.sock``, with the ``[node]`` limits given as the param."""
    async with gated_endpoint(tmp_path, getattr(request, "param", {}), gate_open=True) as served:
        yield served


async def until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(int(WAIT / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(what)


def unix_session(sock: Path) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)))


async def test_a_subscription_made_after_its_connection_closed_is_not_kept(ep: Endpoint) -> None:
    server, backend, sock = ep
    backend.gate.clear()  # the submit waits, as for a slow fsync
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "qssh_submitMessage", "params": [GOSSIP]},
        {"jsonrpc": "2.0", "id": 2, "method": "qssh_subscribeMessages", "params": [{}]},
        {"jsonrpc": "2.0", "id": 3, "method": "qssh_subscribeTier"},
    ]
    async with unix_session(sock) as s:
        ws = await s.ws_connect("http://localhost/")
        await ws.send_bytes(orjson.dumps(batch))
        await asyncio.wait_for(backend.entered.wait(), WAIT)
        await ws.close()  # the client goes away while the batch is in flight
    await until(lambda: all(x.closed for x in server.sessions), "session not closed")
    backend.gate.set()  # the subscribes run now, on a closed connection
    await until(lambda: not server.sessions and not server.busy, "batch did not finish")
    assert server.sessions_by_sub == {}
    assert backend.node_depth() == 1  # the submit itself was done


RPC_METHODS = b'{"jsonrpc":"2.0","id":1,"method":"rpc_methods"}'
JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.mark.parametrize("ep", [{"max_connections": 4}], indirect=True)
async def test_a_websocket_counts_once_toward_max_connections(ep: Endpoint) -> None:
    server, _, sock = ep
    async with unix_session(sock) as s:
        ws1 = await s.ws_connect("http://localhost/")
        ws2 = await s.ws_connect("http://localhost/")
        r0, w = await asyncio.open_unix_connection(str(sock))  # and one newline JSON
        w.write(RPC_METHODS + b"\n")
        await asyncio.wait_for(r0.readline(), WAIT)
        assert server.connections() == 3
        async with unix_session(sock) as s2:  # the fourth of four: served
            r = await s2.post("http://localhost/", data=RPC_METHODS, headers=JSON_HEADERS)
            assert r.status == 200, await r.read()
        w.close()
        await ws1.close()
        await ws2.close()


@pytest.mark.parametrize("ep", [{"max_connections": 1}], indirect=True)
async def test_refused_connections_that_hang_up_are_forgotten(ep: Endpoint) -> None:
    server, _, sock = ep
    r, w = await asyncio.open_unix_connection(str(sock))
    w.write(RPC_METHODS + b"\n")  # holds the one slot
    await asyncio.wait_for(r.readline(), WAIT)
    for _ in range(3):
        r2, w2 = await asyncio.open_unix_connection(str(sock))
        w2.write(b"GET / HT")  # over the cap: refused at its first request, never sent
        await w2.drain()
        await until(lambda: len(server._refused) == 1, "not refused")
        w2.close()  # and it hangs up
        assert await asyncio.wait_for(r2.read(), WAIT) == b""
        await until(lambda: not server._refused, "a refused connection that left is kept")
    w.close()


# none closed for silence
@pytest.mark.parametrize(
    "ep", [{"max_connections": 2, "first_request_timeout": 3600.0}], indirect=True
)
async def test_connections_that_send_nothing_count_toward_max_connections(ep: Endpoint) -> None:
    server, _, sock = ep
    n, refusing = 40, node_endpoint.REFUSE_AT_MOST
    conns = [await asyncio.open_unix_connection(str(sock)) for _ in range(n)]
    try:
        # the first 2 take the two slots, the next REFUSE_AT_MOST wait to be told why,
        # the rest are closed at once (they were all held, ~10 s each: any number of fds)
        for r, _w in conns[2 + refusing :]:
            assert await asyncio.wait_for(r.read(), WAIT) == b""
        assert not any(r.at_eof() for r, _w in conns[: 2 + refusing])
        assert (len(server.sniffing), len(server.refusing)) == (2, refusing)
        assert (server.connections(), server.refusals()) == (2, refusing)

        r, w = conns[0]  # one with a slot is served
        w.write(RPC_METHODS + b"\n")
        assert "result" in orjson.loads(await asyncio.wait_for(r.readline(), WAIT))
        r, w = conns[2]  # one over the limit is told why, and closed
        w.write(RPC_METHODS + b"\n")
        reply = orjson.loads(await asyncio.wait_for(r.readline(), WAIT))
        assert reply["error"]["code"] == -32000
        assert await asyncio.wait_for(r.read(), WAIT) == b""
    finally:
        for _r, w in conns:
            w.close()


@pytest.mark.parametrize(
    "ep", [{"max_in_flight": 4, "max_ws_message_bytes": 1_000_000}], indirect=True
)
async def test_a_batch_in_flight_holds_its_bytes_not_its_parsed_form(ep: Endpoint) -> None:
    server, backend, sock = ep
    backend.gate.clear()  # the first item of each batch waits, as for a slow fsync
    submit = {"jsonrpc": "2.0", "id": 1, "method": "qssh_submitMessage", "params": [GOSSIP]}
    # the second item: 320,000 empty objects, 3 bytes each in JSON, 64 parsed
    filler = b'{"jsonrpc":"2.0","id":2,"method":"rpc_methods","params":[' + b"{}," * 320_000
    batch = b"[" + orjson.dumps(submit) + b"," + filler + b"{}]}]"
    assert len(batch) < 1_000_000
    in_flight = 4
    tracemalloc.start()
    try:
        async with unix_session(sock) as s:
            ws = await s.ws_connect("http://localhost/", max_msg_size=0)
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(in_flight):
                await ws.send_bytes(batch)
            await until(
                lambda: sum(len(x.busy) for x in server.sessions) == in_flight, "not in flight"
            )
            held = tracemalloc.get_traced_memory()[0] - before
            backend.gate.set()
            replies = [orjson.loads(await ws.receive_str(timeout=WAIT)) for _ in range(in_flight)]
            await ws.close()
    finally:
        tracemalloc.stop()
    print(f"{held / 1e6:.1f} MB held for {in_flight} batches of {len(batch) / 1e6:.2f} MB")
    # each holds its body and its items' bytes (docs/operations.md); parsed, ~25 MB each
    assert held < in_flight * 3 * len(batch), f"{held / 1e6:.0f} MB held"
    for reply in replies:  # and the batch is answered as before: item by item
        assert [r["id"] for r in reply] == [1, 2]
        assert isinstance(reply[0]["result"], int)
        assert reply[1]["error"]["code"] == -32602


async def test_a_subscribe_sent_as_a_notification_makes_no_subscription(ep: Endpoint) -> None:
    server, _, sock = ep
    r, w = await asyncio.open_unix_connection(str(sock))
    for method in ("qssh_subscribeMessages", "qssh_subscribeTier"):  # no id: no reply
        w.write(orjson.dumps({"jsonrpc": "2.0", "method": method}) + b"\n")
    w.write(RPC_METHODS + b"\n")  # answered after them: they have run
    assert orjson.loads(await asyncio.wait_for(r.readline(), WAIT))["id"] == 1
    (session,) = server.sessions
    assert (len(session.subs.messages), len(session.subs.tier)) == (0, 0)
    assert server.sessions_by_sub == {}
    w.close()


# ---- the first-request deadline (node.first_request_timeout) ------------------------

DEADLINE = {"max_connections": 1, "first_request_timeout": 0.5}


async def closed_with(sock: Path, sent: bytes) -> bytes:
    """What a client that sends ``sent`` and then nothing gets before it is closed."""
    r, w = await asyncio.open_unix_connection(str(sock))
    try:
        w.write(sent)
        return await asyncio.wait_for(r.read(), WAIT)  # to EOF: closed by the server
    finally:
        w.close()


async def is_served(sock: Path) -> None:
    """A new connection gets a slot (not -32000) and its request answered."""
    r, w = await asyncio.open_unix_connection(str(sock))
    try:
        w.write(RPC_METHODS + b"\n")
        assert "result" in orjson.loads(await asyncio.wait_for(r.readline(), WAIT))
    finally:
        w.close()


@pytest.mark.parametrize("ep", [DEADLINE], indirect=True)
@pytest.mark.parametrize("byte", [b"{", b" ", b"P"], ids=["line", "blank", "http"])
async def test_a_client_silent_after_one_byte_is_closed_and_its_slot_freed(
    ep: Endpoint, byte: bytes
) -> None:
    server, _, sock = ep
    got = await closed_with(sock, byte)
    if byte == b"P":
        assert got.startswith(b"HTTP/1.1 408 ")
    else:
        assert orjson.loads(got)["error"]["data"] == {"code": "request_timeout"}
    await until(lambda: server.connections() == 0, "the closed connection holds its slot")
    await is_served(sock)  # max_connections = 1: the slot is free again


@pytest.mark.parametrize("ep", [DEADLINE], indirect=True)
@pytest.mark.parametrize(
    "sent",
    [
        b"POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n",
        b"POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + RPC_METHODS[:10],
    ],
    ids=["head", "body"],
)
async def test_a_partial_http_request_gets_408_and_is_closed(ep: Endpoint, sent: bytes) -> None:
    server, _, sock = ep
    head, _, body = (await closed_with(sock, sent)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"first_request_timeout" in orjson.loads(body)["error"]["message"].encode()
    await until(lambda: server.connections() == 0, "the closed connection holds its slot")
    await is_served(sock)


@pytest.mark.parametrize("ep", [DEADLINE], indirect=True)
async def test_a_partial_newline_json_line_is_closed(ep: Endpoint) -> None:
    server, _, sock = ep
    reply = orjson.loads(await closed_with(sock, RPC_METHODS[:20]))
    assert reply["error"]["code"] == -32600
    assert reply["error"]["data"] == {"code": "request_timeout"}
    await until(lambda: server.connections() == 0, "the closed connection holds its slot")
    await is_served(sock)


@pytest.mark.parametrize("ep", [DEADLINE], indirect=True)
async def test_a_later_partial_request_is_closed_too(ep: Endpoint) -> None:
    """After a complete request, one begun and not finished has the same deadline."""
    _, _, sock = ep
    r, w = await asyncio.open_unix_connection(str(sock))
    w.write(RPC_METHODS + b"\n" + RPC_METHODS[:20])
    assert "result" in orjson.loads(await asyncio.wait_for(r.readline(), WAIT))
    line = orjson.loads(await asyncio.wait_for(r.read(), WAIT))
    assert line["error"]["data"] == {"code": "request_timeout"}
    w.close()

    r, w = await asyncio.open_unix_connection(str(sock))  # HTTP, kept alive
    post = b"POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
    w.write(post + b"Content-Length: %d\r\n\r\n%s" % (len(RPC_METHODS), RPC_METHODS))
    head = (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), WAIT)).decode()
    assert head.startswith("HTTP/1.1 200 ")
    length = int(head.lower().split("content-length:")[1].split()[0])
    assert "result" in orjson.loads(await asyncio.wait_for(r.readexactly(length), WAIT))
    w.write(post)  # the next request's head, unfinished
    assert (await asyncio.wait_for(r.read(), WAIT)).startswith(b"HTTP/1.1 408 ")
    w.close()


@pytest.mark.parametrize("ep", [{"first_request_timeout": 0.5}], indirect=True)
async def test_idle_newline_and_websocket_connections_stay_open_past_the_deadline(
    ep: Endpoint,
) -> None:
    """Idle with no partial request (as a subscriber is) is not a late request."""
    server, _, sock = ep
    r, w = await asyncio.open_unix_connection(str(sock))
    w.write(RPC_METHODS + b"\n")
    assert "result" in orjson.loads(await asyncio.wait_for(r.readline(), WAIT))
    async with unix_session(sock) as s:
        ws = await s.ws_connect("http://localhost/")  # upgraded: its first request done
        await asyncio.sleep(1.5)  # three deadlines
        assert not r.at_eof()
        assert not ws.closed
        w.write(RPC_METHODS + b"\n")
        assert "result" in orjson.loads(await asyncio.wait_for(r.readline(), WAIT))
        await ws.send_bytes(RPC_METHODS)
        assert "result" in orjson.loads(await asyncio.wait_for(ws.receive_str(), WAIT))
        assert server.connections() == 2
        await ws.close()
    w.close()
