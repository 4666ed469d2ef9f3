"""Sync submits/s of the queue service over SSH, against its physical and Redis baselines.

Prints one JSON object. In each round, interleaved, on the same disk:
  - fdatasync: a raw ``write + fdatasync`` loop of 200-byte records (one writer);
  - redis_always_{1,16}: RPUSH to a private redis-server with ``appendfsync always``,
    over 1 and 16 connections, each connection pipelined ``--window`` deep;
  - redis_always_16_c_client: the same Redis load from ``redis-benchmark`` (C client);
  - qssh_sync_{1,16}: ``submit`` mode=sync to a real ``qssh-sidecar serve`` over
    post-quantum SSH (ML-KEM-768+X25519, Falcon-512), over 1 and 16 connections,
    each pipelined ``--window`` deep; qssh_sync_16_unpipelined: 16 connections, one
    request in flight on each;
  - redis_always_16_ssh_tunnel_{pipelined,unpipelined}: ``redis-benchmark`` through an
    OpenSSH tunnel (``ssh -N -L`` to a private sshd on a loopback port, throwaway
    Ed25519 keys), 16 connections, ``-P --window`` and ``-P 1``: the secured baseline.
Reported: medians over rounds of ops/s, p50/p99 latency in ms, and ratios.

    python bench/service.py [--rounds 3] [--seconds 3] [--window 16] [--dir DIR]
                            [--c-client-requests 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncssh

import transport.ssh_algorithms  # noqa: F401  (registers ssh-falcon512)
from bench.baselines import OpenSSHTunnel, RedisAlwaysServer, fdatasync_loop, free_port
from bench.stats import closed_loop, dumps, interleave, median_fields, ratio
from transport.client import QueueClient
from transport.keys import known_hosts_line

REPO = Path(__file__).resolve().parents[1]
RECORD = b"x" * 200


class SidecarServer:
    """A real ``qssh-sidecar serve`` subprocess with fresh keys."""

    def __init__(
        self,
        directory: Path,
        extra_args: list[str] | None = None,
        python_path: str | None = None,
    ) -> None:
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
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(known_hosts_line("127.0.0.1", self.port, host) + "\n")
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
                *(extra_args or []),
            ],
            cwd=self.dir,
            env={**os.environ, "PYTHONPATH": python_path or str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def connect(self) -> QueueClient:
        client: QueueClient = await QueueClient.connect(
            "127.0.0.1",
            self.port,
            username=None,
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


async def run(
    rounds: int, seconds: float, window: int, directory: str | None, c_client_requests: int
) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="qssh-bench-", dir=directory))
    redis_server = RedisAlwaysServer(base)
    sidecar = SidecarServer(base)
    tunnel: OpenSSHTunnel | None = None
    tunnel_problem: str | None = None
    try:
        await redis_server.wait()
        await sidecar.wait()
        try:
            tunnel = OpenSSHTunnel(base, redis_server.port)
            await tunnel.wait()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            tunnel_problem = str(exc)
            if tunnel is not None:
                tunnel.stop()
            tunnel = None
        redis_settings = await redis_server.settings()
        w, t = window, seconds
        cases: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
            ("fdatasync", lambda: asyncio.to_thread(fdatasync_loop, base, len(RECORD), t)),
            ("redis_always_1", lambda: redis_server.rpush_load(1, w, t, RECORD)),
            ("qssh_sync_1", lambda: bench_qssh(sidecar, 1, w, t)),
            ("redis_always_16", lambda: redis_server.rpush_load(16, w, t, RECORD)),
            ("qssh_sync_16", lambda: bench_qssh(sidecar, 16, w, t)),
            (
                "redis_always_16_c_client",
                lambda: asyncio.to_thread(
                    redis_server.redis_benchmark, 16, w, len(RECORD), c_client_requests
                ),
            ),
        ]
        cases.append(("qssh_sync_16_unpipelined", lambda: bench_qssh(sidecar, 16, 1, t)))
        if tunnel is not None:
            port = tunnel.port

            def through_tunnel(win: int) -> Callable[[], Awaitable[dict[str, float]]]:
                n = max(1000, c_client_requests * win // w)  # unpipelined: fewer requests
                return lambda: asyncio.to_thread(
                    redis_server.redis_benchmark, 16, win, len(RECORD), n, port
                )

            cases.append(("redis_always_16_ssh_tunnel_pipelined", through_tunnel(w)))
            cases.append(("redis_always_16_ssh_tunnel_unpipelined", through_tunnel(1)))
        samples = await interleave(cases, rounds)
    finally:
        if tunnel is not None:
            tunnel.stop()
        redis_server.stop()
        sidecar.stop()
        shutil.rmtree(base, ignore_errors=True)

    medians = {name: median_fields(runs) for name, runs in samples.items() if runs[0]}

    def ops_ratio(a: str, b: str) -> float:
        return ratio(medians[a]["ops_per_s"], medians[b]["ops_per_s"])

    return {
        "ratios": {
            "qssh_16_vs_redis_always_16": ops_ratio("qssh_sync_16", "redis_always_16"),
            "qssh_1_vs_redis_always_1": ops_ratio("qssh_sync_1", "redis_always_1"),
            "qssh_16_vs_fdatasync_loop": ops_ratio("qssh_sync_16", "fdatasync"),
            "redis_always_16_vs_fdatasync_loop": ops_ratio("redis_always_16", "fdatasync"),
            **(
                {
                    "qssh_16_vs_redis_always_16_c_client": ops_ratio(
                        "qssh_sync_16", "redis_always_16_c_client"
                    )
                }
                if "redis_always_16_c_client" in medians
                else {}
            ),
            **(
                {
                    "qssh_16_pipelined_vs_redis_ssh_tunnel_pipelined": ops_ratio(
                        "qssh_sync_16", "redis_always_16_ssh_tunnel_pipelined"
                    ),
                    "qssh_16_unpipelined_vs_redis_ssh_tunnel_unpipelined": ops_ratio(
                        "qssh_sync_16_unpipelined", "redis_always_16_ssh_tunnel_unpipelined"
                    ),
                }
                if "redis_always_16_ssh_tunnel_unpipelined" in medians
                else {}
            ),
        },
        "ssh_tunnel": tunnel_problem or "OpenSSH ssh -N -L through a private sshd, Ed25519",
        "benchmark": "service_sync_submit",
        "rounds": rounds,
        "seconds_per_case": seconds,
        "window_per_connection": window,
        "record_bytes": len(RECORD),
        "cpus": os.cpu_count(),
        "redis": redis_settings,
        "results": medians,
        "ratio_meaning": "ops/s of the first / ops/s of the second: > 1 = first faster",
        "targets": {
            "qssh_16_pipelined_vs_redis_ssh_tunnel_pipelined": ">= 0.25",
            "qssh_16_unpipelined_vs_redis_ssh_tunnel_unpipelined": ">= 1",
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=16, help="requests in flight per connection")
    parser.add_argument("--dir", default=None, help="where to put the logs (a real disk)")
    parser.add_argument("--c-client-requests", type=int, default=200_000, help="redis-benchmark -n")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.rounds, args.seconds, args.window, args.dir, args.c_client_requests)
    )
    sys.stdout.buffer.write(dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
