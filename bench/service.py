"""Sync submits/s of the queue service over SSH, against its physical and Redis baselines.

Prints one JSON object. In each round, interleaved, on the same disk:
  - fdatasync: a raw ``write + fdatasync`` loop of 200-byte records (one writer);
  - redis_always_{1,16}: RPUSH to a private redis-server with ``appendfsync always``,
    over 1 and 16 connections, each connection pipelined ``--window`` deep;
  - redis_always_16_c_client: the same Redis load from ``redis-benchmark`` (C client);
  - qssh_sync_{1,16}: ``submit`` mode=sync to a real ``qssh-sidecar serve`` over
    post-quantum SSH (ML-KEM-768+X25519, Falcon-512), over 1 and 16 connections,
    each pipelined ``--window`` deep.
Reported: medians over rounds of ops/s, p50/p99 latency in ms, and ratios.

    python bench/service.py [--rounds 3] [--seconds 3] [--window 16] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Run as a script, bench/ is first on sys.path and bench/queue.py would shadow the
# standard library's queue module (which redis imports): put the repo root there.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import asyncssh  # noqa: E402
import orjson  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

import transport.ssh_algorithms  # noqa: E402, F401  (registers ssh-falcon512)
from transport.client import QueueClient  # noqa: E402

RECORD = b"x" * 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fdatasync_loop(directory: Path, seconds: float) -> dict[str, float]:
    path = directory / "fdatasync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    latencies: list[float] = []
    try:
        end = time.perf_counter() + seconds
        start = time.perf_counter()
        while (now := time.perf_counter()) < end:
            os.write(fd, RECORD)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - now)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return summarize(len(latencies), elapsed, latencies)


def summarize(count: int, elapsed: float, latencies: list[float]) -> dict[str, float]:
    return {
        "ops_per_s": count / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "ops": count,
    }


async def closed_loop(
    workers: list[Callable[[], Awaitable[Any]]], window: int, seconds: float
) -> dict[str, float]:
    """Each worker function is one connection; ``window`` requests in flight on each."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def lane(op: Callable[[], Awaitable[Any]]) -> None:
        while (now := time.perf_counter()) < end:
            await op()
            latencies.append(time.perf_counter() - now)

    start = time.perf_counter()
    await asyncio.gather(*(lane(op) for op in workers for _ in range(window)))
    return summarize(len(latencies), time.perf_counter() - start, latencies)


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory / "redis"
        self.dir.mkdir()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not installed")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def wait(self) -> None:
        for _ in range(200):
            try:
                client = aioredis.Redis(port=self.port)
                await client.ping()
                await client.aclose()
                return
            except OSError:
                await asyncio.sleep(0.05)
            except aioredis.ConnectionError:
                await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def bench_redis(port: int, connections: int, window: int, seconds: float) -> dict[str, float]:
    clients = [
        aioredis.Redis(port=port, single_connection_client=False, max_connections=window)
        for _ in range(connections)
    ]
    try:

        def op(c: aioredis.Redis) -> Callable[[], Awaitable[Any]]:
            async def rpush() -> Any:
                return await c.rpush("q", RECORD)

            return rpush

        ops = [op(c) for c in clients]
        await clients[0].delete("q")
        return await closed_loop(ops, window, seconds)
    finally:
        for c in clients:
            await c.aclose()


def redis_benchmark_c_client(port: int, connections: int, window: int) -> dict[str, float]:
    """The same Redis load from the C client ``redis-benchmark``: Redis's own ceiling
    here, free of Python client overhead (which bounds both Python-client figures)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {}
    out = subprocess.run(
        [
            binary, "-p", str(port), "-c", str(connections), "-P", str(window),
            "-n", "200000", "-d", str(len(RECORD)), "-t", "rpush", "--csv",
        ],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    header, row = (line.replace('"', "").split(",") for line in out.strip().splitlines()[-2:])
    values = dict(zip(header, row, strict=True))
    return {
        "ops_per_s": float(values["rps"]),
        "p50_ms": float(values["p50_latency_ms"]),
        "p99_ms": float(values["p99_latency_ms"]),
    }


class SidecarServer:
    """A real ``qssh-sidecar serve`` subprocess with fresh keys."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory / "sidecar"
        self.dir.mkdir()
        self.port = free_port()
        host = asyncssh.generate_private_key("ssh-falcon512")
        self.user_key = asyncssh.generate_private_key("ssh-falcon512")
        (self.dir / "host_key").write_bytes(host.export_private_key())
        os.chmod(self.dir / "host_key", 0o600)
        public = self.user_key.export_public_key().decode().split()
        (self.dir / "authorized_keys").write_text(
            f'roles="producer,consumer,admin" {public[0]} {public[1]} bench\n'
        )
        host_public = host.export_public_key().decode().split()
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public[0]} {host_public[1]}\n")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "sidecar.cli", "serve",
                "--instance", "bench",
                "--data-dir", str(self.dir / "data"),
                "--listen", f"127.0.0.1:{self.port}",
                "--host-key", str(self.dir / "host_key"),
                "--authorized-keys", str(self.dir / "authorized_keys"),
                "--metrics", "",
                "--log-level", "WARNING",
            ],
            cwd=self.dir,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def connect(self) -> QueueClient:
        client: QueueClient = await QueueClient.connect(
            "127.0.0.1",
            self.port,
            username="bench",
            client_keys=[self.user_key],
            known_hosts=self.known_hosts,
        )
        return client

    async def wait(self) -> None:
        for _ in range(600):
            if self.proc.poll() is not None:
                raise RuntimeError("qssh-sidecar serve exited")
            try:
                client = await self.connect()
            except Exception:
                await asyncio.sleep(0.1)
                continue
            await client.close()
            return
        raise RuntimeError("qssh-sidecar serve did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def bench_qssh(
    server: SidecarServer, connections: int, window: int, seconds: float
) -> dict[str, float]:
    clients = [await server.connect() for _ in range(connections)]
    counter = iter(range(10**9))
    try:

        def op(c: QueueClient) -> Callable[[], Awaitable[Any]]:
            async def submit() -> Any:
                n = next(counter)
                message = {"kind": "gossip", "topic": f"bench{n}", "data": "eHh4eHh4eHh4eA=="}
                return await c.submit(message, "sync")

            return submit

        result = await closed_loop([op(c) for c in clients], window, seconds)
        await drain(clients[0])
        return result
    finally:
        for c in clients:
            await c.close()


async def drain(client: QueueClient) -> None:
    """Empty the queue between cases (pops pipelined, so they share fsyncs)."""
    for _ in range(10_000):
        popped = await asyncio.gather(*(client.pop() for _ in range(256)))
        if any(p is None for p in popped):
            return


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="qssh-bench-", dir=args.dir))
    redis_server = RedisServer(base)
    sidecar = SidecarServer(base)
    samples: dict[str, list[dict[str, float]]] = {}
    try:
        await redis_server.wait()
        await sidecar.wait()
        w, t, rport = args.window, args.seconds, redis_server.port
        c_client = redis_benchmark_c_client
        cases: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
            ("fdatasync", lambda: asyncio.to_thread(fdatasync_loop, base, t)),
            ("redis_always_1", lambda: bench_redis(rport, 1, w, t)),
            ("qssh_sync_1", lambda: bench_qssh(sidecar, 1, w, t)),
            ("redis_always_16", lambda: bench_redis(rport, 16, w, t)),
            ("qssh_sync_16", lambda: bench_qssh(sidecar, 16, w, t)),
            ("redis_always_16_c_client", lambda: asyncio.to_thread(c_client, rport, 16, w)),
        ]
        for _ in range(args.rounds):
            for name, case in cases:
                samples.setdefault(name, []).append(await case())
    finally:
        redis_server.stop()
        sidecar.stop()
        shutil.rmtree(base, ignore_errors=True)

    medians = {
        name: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for name, runs in samples.items()
        if runs[0]
    }

    def ratio(a: str, b: str) -> float:
        return medians[a]["ops_per_s"] / medians[b]["ops_per_s"]

    return {
        "benchmark": "service_sync_submit",
        "rounds": args.rounds,
        "seconds_per_case": args.seconds,
        "window_per_connection": args.window,
        "cpus": os.cpu_count(),
        "results": medians,
        "ratios": {
            "qssh_16_vs_redis_always_16": ratio("qssh_sync_16", "redis_always_16"),
            "qssh_1_vs_redis_always_1": ratio("qssh_sync_1", "redis_always_1"),
            "qssh_16_vs_fdatasync_loop": ratio("qssh_sync_16", "fdatasync"),
            "redis_always_16_vs_fdatasync_loop": ratio("redis_always_16", "fdatasync"),
            **(
                {
                    "qssh_16_vs_redis_always_16_c_client": ratio(
                        "qssh_sync_16", "redis_always_16_c_client"
                    )
                }
                if "redis_always_16_c_client" in medians
                else {}
            ),
        },
        "target": "qssh_16_vs_redis_always_16 >= 0.5",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=16, help="requests in flight per connection")
    parser.add_argument("--dir", default=None, help="where to put the logs (a real disk)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
