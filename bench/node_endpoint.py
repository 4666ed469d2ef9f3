"""The node endpoint: submits/s over WebSocket, HTTP and unix newline JSON beside the
SSH path, and delivery latency of a subscription against polling every 10 ms.

Prints one JSON object. One real ``qssh-sidecar serve`` (with ``--node-http``) serves
every case; in each round, interleaved:
  - ssh_{1,16}: ``submit`` mode=sync over post-quantum SSH (as bench/service.py),
    ``--window`` requests in flight per connection;
  - ws_{1,16}: ``qssh_submitMessage`` mode=sync over WebSocket (aiohttp client),
    ``--window`` in flight per connection (JSON-RPC ids, replies in any order);
  - unix_line_{1,16}: the same over newline JSON on the unix socket, same window;
  - http_{1,16}: the same over HTTP POST with keep-alive; HTTP/1.1 has no
    pipelining, so one request in flight per connection.
Latency (after the throughput cases, same daemon): ``--latency-messages`` messages, one
at a time, from the moment the submit is sent until the consumer has the message:
  - subscription: a ``qssh_subscribeMessages`` notification on a second WebSocket;
  - poll_10ms: ``qssh_popMessage`` every 10 ms on a second WebSocket.
Reported: medians over rounds of ops/s and p50/p99 ms; latency median/p10/p90/p99.

    python bench/node_endpoint.py [--rounds 3] [--seconds 3] [--window 16] [--dir DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from bench.baselines import free_port
from bench.service import SidecarServer, bench_qssh
from bench.stats import closed_loop, dumps, interleave, median_fields, percentile, ratio

GOSSIP_DATA = [120] * 10  # the same 10 bytes as the SSH bench's message


def _submit_body(req_id: int, n: int) -> bytes:
    message = {"Gossip": {"topic": f"bench{n}", "data": GOSSIP_DATA}}
    req = {"jsonrpc": "2.0", "id": req_id, "method": "qssh_submitMessage"}
    req["params"] = [message, "sync"]
    return orjson.dumps(req)


class Pipelined:
    """JSON-RPC over one ordered stream (WebSocket or newline JSON): many requests in
    flight, replies matched by id, notifications handed to ``on_note``."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        on_note: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._send = send
        self.on_note = on_note
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    def received(self, data: bytes | str) -> None:
        doc = orjson.loads(data)
        fut = self._waiting.pop(doc.get("id"), None) if "id" in doc else None
        if fut is not None:
            fut.set_result(doc)
        elif self.on_note is not None:
            self.on_note(doc)

    async def call(self, body_for: Callable[[int], bytes]) -> dict[str, Any]:
        req_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        await self._send(body_for(req_id))
        reply: dict[str, Any] = await fut
        if "error" in reply:
            raise RuntimeError(f"node endpoint error: {reply['error']}")
        return reply

    async def method(self, method: str, params: Any = None) -> Any:
        def body(req_id: int) -> bytes:
            req: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
            if params is not None:
                req["params"] = params
            return orjson.dumps(req)

        return (await self.call(body))["result"]


class WsLane:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    async def __aenter__(self) -> Pipelined:
        self.ws = await self.session.ws_connect(self.url, max_msg_size=0)

        async def send(data: bytes) -> None:
            await self.ws.send_str(data.decode())

        self.rpc = Pipelined(send)
        self._reader = asyncio.create_task(self._read())
        return self.rpc

    async def _read(self) -> None:
        async for msg in self.ws:
            self.rpc.received(msg.data)

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        self._reader.cancel()


class LineLane:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def __aenter__(self) -> Pipelined:
        self.reader, self.writer = await asyncio.open_unix_connection(
            str(self.path), limit=16 * 1024 * 1024
        )

        async def send(data: bytes) -> None:
            self.writer.write(data + b"\n")
            await self.writer.drain()

        self.rpc = Pipelined(send)
        self._task = asyncio.create_task(self._read())
        return self.rpc

    async def _read(self) -> None:
        while line := await self.reader.readline():
            self.rpc.received(line)

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        self._task.cancel()


class NodeSidecar(SidecarServer):
    """bench/service.py's daemon, with the node endpoint on a loopback port too."""

    def __init__(self, directory: Path) -> None:
        self.http_port = free_port()
        # a unix socket path has at most 107 bytes: keep it short whatever --dir is
        self.socket_dir = Path(tempfile.mkdtemp(prefix="qssh-node-"))
        self.socket = self.socket_dir / "node.sock"
        config = directory / "node.toml"
        config.write_text(
            f'[node]\nsocket = "{self.socket}"\nhttp = "127.0.0.1:{self.http_port}"\n'
            "[hardware]\nuse_udev = false\nchar_devices = []\n"
        )
        super().__init__(directory, extra_args=["--config", str(config)])
        self.url = f"http://127.0.0.1:{self.http_port}/"

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


async def _drain(server: NodeSidecar) -> None:
    async with aiohttp.ClientSession() as s, WsLane(s, server.url) as rpc:
        while True:
            popped = await asyncio.gather(*(rpc.method("qssh_popMessage") for _ in range(256)))
            if any(p is None for p in popped):
                return


async def bench_pipelined(lanes: list[Any], window: int, seconds: float) -> dict[str, float]:
    counter = itertools.count()
    rpcs = [await lane.__aenter__() for lane in lanes]
    try:

        def op(rpc: Pipelined) -> Callable[[], Awaitable[Any]]:
            async def submit() -> Any:
                n = next(counter)
                return await rpc.call(lambda req_id: _submit_body(req_id, n))

            return submit

        return await closed_loop([op(r) for r in rpcs], window, seconds)
    finally:
        for lane in lanes:
            await lane.__aexit__(None, None, None)


async def bench_ws(server: NodeSidecar, conns: int, window: int, seconds: float) -> Any:
    async with aiohttp.ClientSession() as s:
        result = await bench_pipelined(
            [WsLane(s, server.url) for _ in range(conns)], window, seconds
        )
    await _drain(server)
    return result


async def bench_line(server: NodeSidecar, conns: int, window: int, seconds: float) -> Any:
    lanes = [LineLane(server.socket) for _ in range(conns)]
    result = await bench_pipelined(lanes, window, seconds)
    await _drain(server)
    return result


async def bench_http(server: NodeSidecar, conns: int, seconds: float) -> dict[str, float]:
    counter = itertools.count()
    connector = aiohttp.TCPConnector(limit=conns)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as s:

        async def submit() -> Any:
            n = next(counter)
            async with s.post(server.url, data=_submit_body(1, n), headers=headers) as r:
                reply = await r.read()
            if b'"error"' in reply:
                raise RuntimeError(reply.decode())
            return reply

        result = await closed_loop([submit] * conns, 1, seconds)
    await _drain(server)
    return result


async def latency(server: NodeSidecar, messages: int, how: str) -> list[float]:
    """Seconds from sending a submit until the consumer holds the message."""
    samples: list[float] = []
    async with aiohttp.ClientSession() as s, WsLane(s, server.url) as producer:
        consumer_lane = WsLane(s, server.url)
        consumer = await consumer_lane.__aenter__()
        try:
            got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            if how == "subscription":
                consumer.on_note = got.put_nowait
                await consumer.method("qssh_subscribeMessages", [{"max_unacked": 16}])
            for n in range(messages):
                start = time.perf_counter()
                message = {"Gossip": {"topic": f"lat{n}", "data": GOSSIP_DATA}}
                submitted = asyncio.create_task(
                    producer.method("qssh_submitMessage", [message, "async"])
                )
                if how == "subscription":
                    note = await got.get()
                    samples.append(time.perf_counter() - start)
                    lease_id = note["params"]["result"]["lease_id"]
                    await consumer.method("qssh_ackMessage", [lease_id])
                else:
                    while (await consumer.method("qssh_popMessage")) is None:  # noqa: ASYNC110
                        await asyncio.sleep(0.010)  # the polling being measured
                    samples.append(time.perf_counter() - start)
                await submitted
        finally:
            await consumer_lane.__aexit__(None, None, None)
    return samples


def _spread(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "median_ms": round(percentile(samples, 0.5) * 1e3, 3),
        "p10_ms": round(percentile(samples, 0.1) * 1e3, 3),
        "p90_ms": round(percentile(samples, 0.9) * 1e3, 3),
        "p99_ms": round(percentile(samples, 0.99) * 1e3, 3),
        "messages": len(samples),
    }


async def run(
    rounds: int, seconds: float, window: int, directory: str | None, latency_messages: int
) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="qssh-bench-node-", dir=directory))
    server = NodeSidecar(base)
    try:
        await server.wait()
        w, t = window, seconds
        cases: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = []
        for c in (1, 16):
            cases += [
                (f"ssh_{c}", lambda c=c: bench_qssh(server, c, w, t)),  # type: ignore[misc]
                (f"ws_{c}", lambda c=c: bench_ws(server, c, w, t)),  # type: ignore[misc]
                (f"unix_line_{c}", lambda c=c: bench_line(server, c, w, t)),  # type: ignore[misc]
                (f"http_{c}", lambda c=c: bench_http(server, c, t)),  # type: ignore[misc]
            ]
        samples = await interleave(cases, rounds)
        delivery = {
            how: _spread(await latency(server, latency_messages, how))
            for how in ("subscription", "poll_10ms")
        }
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    medians = {name: median_fields(runs) for name, runs in samples.items()}

    def ops_ratio(a: str, b: str) -> float:
        return ratio(medians[a]["ops_per_s"], medians[b]["ops_per_s"])

    return {
        "ratios": {
            **{
                f"{t}_{c}_vs_ssh_{c}": ops_ratio(f"{t}_{c}", f"ssh_{c}")
                for t in ("ws", "unix_line", "http")
                for c in (1, 16)
            },
            "poll_10ms_vs_subscription_latency": ratio(
                delivery["poll_10ms"]["median_ms"], delivery["subscription"]["median_ms"]
            ),
        },
        "benchmark": "node_endpoint_sync_submit_and_delivery_latency",
        "rounds": rounds,
        "seconds_per_case": seconds,
        "window_per_connection": window,
        "http_window_per_connection": 1,
        "cpus": os.cpu_count(),
        "results": medians,
        "delivery_latency": delivery,
        "ratio_meaning": "ops/s of the first / ops/s of the second: > 1 = first faster; "
        "latency: poll median / subscription median (> 1: the subscription is faster)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=16, help="requests in flight per connection")
    parser.add_argument("--dir", default=None, help="where to put the log (a real disk)")
    parser.add_argument("--latency-messages", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(
        run(args.rounds, args.seconds, args.window, args.dir, args.latency_messages)
    )
    sys.stdout.buffer.write(dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
