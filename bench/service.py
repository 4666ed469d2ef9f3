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
Reported: medians over rounds of ops/s, p50/p99 latency in ms, the CPU each process
used per operation and in % of one core (qssh: ``server`` and ``client``, this Python
process; tunnel: ``redis``, ``sshd`` with its per-connection children, ``ssh`` and
``client``, redis-benchmark), the whole machine's busy CPU the same way (``machine``,
/proc/stat: kernel threads and softirq included) with ``machine_bound_ops_per_s``, the
rate at which that CPU per operation would fill every core, and ratios.

    python bench/service.py [--rounds 3] [--seconds 3] [--window 16] [--dir DIR]
                            [--c-client-requests 200000] [--cases NAME,...]
                            [--compare-tree DIR] [--event-loop uvloop|asyncio]
                            [--server-event-loop uvloop|asyncio]

``--cases`` runs only the named cases (ratios whose cases ran); ``--compare-tree``
also runs every qssh case against a server from another checkout (e.g. main before a
change), interleaved, as ``NAME@compare``, with ``NAME_vs_compare`` ratios.
``--event-loop`` is the loop of this process, which is the qssh client (default
uvloop, as ``qssh-queue``); ``--server-event-loop`` that of this tree's server
(default uvloop); a ``--compare-tree`` server runs on its own tree's default loop.
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
from bench.cpu import (
    Meter,
    cpu_seconds,
    machine_seconds,
    own_seconds,
    reaped_children_seconds,
    tree_seconds,
)
from bench.stats import closed_loop, dumps, interleave, median_fields, ratio
from transport import event_loop
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
        self.dir.mkdir(parents=True)
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
                "--data-dir", "data",  # relative to cwd: node.sock fits a unix socket path
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

        meter = Meter(
            {
                "server": lambda: cpu_seconds(server.proc.pid),
                "client": own_seconds,
                "machine": machine_seconds,
            }
        )
        meter.start()
        result = await closed_loop([op(c) for c in clients], window, seconds)
        result.update(
            with_machine_bound(meter.stop(result["ops"], result["ops"] / result["ops_per_s"]))
        )
        await drain(clients[0])
        return result
    finally:
        for c in clients:
            await c.close()


def tunnelled(
    redis_server: RedisAlwaysServer, tunnel: OpenSSHTunnel, window: int, requests: int
) -> dict[str, float]:
    """redis-benchmark through the tunnel, with the CPU of each process it crosses."""
    ssh = tunnel.ssh
    assert ssh is not None
    meter = Meter(
        {
            "redis": lambda: cpu_seconds(redis_server.proc.pid),
            "sshd": lambda: tree_seconds(tunnel.sshd.pid),
            "ssh": lambda: cpu_seconds(ssh.pid),
            "client": reaped_children_seconds,  # redis-benchmark, once it has exited
            "machine": machine_seconds,
        }
    )
    meter.start()
    result = redis_server.redis_benchmark(16, window, len(RECORD), requests, tunnel.port)
    if result:
        result.update(with_machine_bound(meter.stop(requests, requests / result["ops_per_s"])))
    return result


def with_machine_bound(cpu: dict[str, float]) -> dict[str, float]:
    """`cpu` plus ``machine_bound_ops_per_s``: the rate at which the whole machine's CPU
    per operation (every process and the kernel) would keep all its cores busy. A case
    whose rate is near it is bound by the machine's CPU, not by latency or one core."""
    per_op = cpu.get("machine_cpu_us_per_op", 0.0)
    if per_op > 0:
        cpu["machine_bound_ops_per_s"] = round((os.cpu_count() or 1) * 1e6 / per_op)
    return cpu


async def drain(client: QueueClient) -> None:
    """Empty the queue between cases (pops pipelined, so they share fsyncs)."""
    for _ in range(10_000):
        popped = await asyncio.gather(*(client.pop() for _ in range(256)))
        if any(p is None for p in popped):
            return


async def run(
    rounds: int,
    seconds: float,
    window: int,
    directory: str | None,
    c_client_requests: int,
    only: frozenset[str] | None = None,
    compare_tree: str | None = None,
    server_event_loop: str | None = None,
) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="qssh-bench-", dir=directory))
    redis_server = RedisAlwaysServer(base)
    loop_args = [] if server_event_loop is None else ["--event-loop", server_event_loop]
    sidecar = SidecarServer(base, extra_args=loop_args)
    compare = SidecarServer(base / "compare", python_path=compare_tree) if compare_tree else None
    tunnel: OpenSSHTunnel | None = None
    tunnel_problem: str | None = None
    try:
        await redis_server.wait()
        await sidecar.wait()
        if compare is not None:
            await compare.wait()
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
        cases: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = []

        def qssh(name: str, connections: int, win: int) -> None:
            cases.append((name, lambda: bench_qssh(sidecar, connections, win, t)))
            if compare is not None:
                cases.append((f"{name}@compare", lambda: bench_qssh(compare, connections, win, t)))

        cases.append(("fdatasync", lambda: asyncio.to_thread(fdatasync_loop, base, len(RECORD), t)))
        cases.append(("redis_always_1", lambda: redis_server.rpush_load(1, w, t, RECORD)))
        qssh("qssh_sync_1", 1, w)
        cases.append(("redis_always_16", lambda: redis_server.rpush_load(16, w, t, RECORD)))
        qssh("qssh_sync_16", 16, w)
        cases.append(
            (
                "redis_always_16_c_client",
                lambda: asyncio.to_thread(
                    redis_server.redis_benchmark, 16, w, len(RECORD), c_client_requests
                ),
            )
        )
        qssh("qssh_sync_16_unpipelined", 16, 1)
        if tunnel is not None:
            ssh_tunnel = tunnel

            def through_tunnel(win: int) -> Callable[[], Awaitable[dict[str, float]]]:
                n = max(1000, c_client_requests * win // w)  # unpipelined: fewer requests
                return lambda: asyncio.to_thread(tunnelled, redis_server, ssh_tunnel, win, n)

            cases.append(("redis_always_16_ssh_tunnel_pipelined", through_tunnel(w)))
            cases.append(("redis_always_16_ssh_tunnel_unpipelined", through_tunnel(1)))
        if only is not None:
            cases = [(n, c) for n, c in cases if n.removesuffix("@compare") in only]
        samples = await interleave(cases, rounds)
    finally:
        if tunnel is not None:
            tunnel.stop()
        redis_server.stop()
        sidecar.stop()
        if compare is not None:
            compare.stop()
        shutil.rmtree(base, ignore_errors=True)

    medians = {name: median_fields(runs) for name, runs in samples.items() if runs[0]}

    pairs = [
        ("qssh_16_vs_redis_always_16", "qssh_sync_16", "redis_always_16"),
        ("qssh_1_vs_redis_always_1", "qssh_sync_1", "redis_always_1"),
        ("qssh_16_vs_fdatasync_loop", "qssh_sync_16", "fdatasync"),
        ("redis_always_16_vs_fdatasync_loop", "redis_always_16", "fdatasync"),
        ("qssh_16_vs_redis_always_16_c_client", "qssh_sync_16", "redis_always_16_c_client"),
        (
            "qssh_16_pipelined_vs_redis_ssh_tunnel_pipelined",
            "qssh_sync_16",
            "redis_always_16_ssh_tunnel_pipelined",
        ),
        (
            "qssh_16_unpipelined_vs_redis_ssh_tunnel_unpipelined",
            "qssh_sync_16_unpipelined",
            "redis_always_16_ssh_tunnel_unpipelined",
        ),
    ]
    pairs += [
        (f"{name}_vs_compare", name, f"{name}@compare")
        for name in list(medians)
        if f"{name}@compare" in medians
    ]
    ratios = {
        key: ratio(medians[a]["ops_per_s"], medians[b]["ops_per_s"])
        for key, a, b in pairs
        if a in medians and b in medians
    }
    return {
        "ratios": ratios,
        "compare_tree": compare_tree,
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
    parser.add_argument("--cases", default=None, help="comma-separated case names (default all)")
    parser.add_argument("--compare-tree", default=None, help="also run qssh cases from this tree")
    parser.add_argument(
        "--event-loop",
        choices=event_loop.NAMES,
        default=event_loop.DEFAULT,
        help="this process's loop, the qssh client's (the servers run on their default)",
    )
    parser.add_argument(
        "--server-event-loop",
        choices=event_loop.NAMES,
        default=None,
        help="this tree's server's loop (default: its default; not the --compare-tree one's)",
    )
    args = parser.parse_args()
    only = None if args.cases is None else frozenset(args.cases.split(","))
    result = event_loop.run(
        run(
            args.rounds,
            args.seconds,
            args.window,
            args.dir,
            args.c_client_requests,
            only,
            args.compare_tree,
            args.server_event_loop,
        ),
        args.event_loop,
    )
    result["client_event_loop"] = args.event_loop
    result["server_event_loop"] = args.server_event_loop or event_loop.DEFAULT
    sys.stdout.buffer.write(dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
