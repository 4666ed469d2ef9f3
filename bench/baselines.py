"""What users would pick instead, each driven the way our figures are (SPEC §8).

* `RawAppendLog` / `fdatasync_loop`: a raw ``os.write + os.fdatasync`` loop appending
  records of a given size — the physical limit of a durable append on this disk.
* `PersistQueueSQLite`: persist-queue's durable SQLite queue (`SQLiteAckQueue`,
  ``auto_commit=True``: one committed transaction per put, get and ack).
* `RedisAlwaysServer`: a private ``redis-server`` with ``appendonly yes`` and
  ``appendfsync always`` on a free loopback port in a temp dir, driven with redis-py
  (and Redis's own C client ``redis-benchmark``).
* `OpenSSHTunnel`: Redis reached through ``ssh -N -L`` and a private ``sshd`` on a
  loopback port (throwaway keys): the baseline for a secured transport.
* `classical_ssh_endpoint`: an asyncssh server and client options for classical SSH,
  Ed25519 host and user keys with curve25519-sha256 key exchange.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import persistqueue
import redis.asyncio as aioredis

from bench.stats import closed_loop, throughput


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- raw write + fdatasync ------------------------------------------------------------


class RawAppendLog:
    """An append-only file written one record at a time, each followed by fdatasync."""

    def __init__(self, path: Path, record_size: int) -> None:
        self.path = path
        self.record = b"x" * record_size
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)

    def append_sync(self) -> None:
        os.write(self._fd, self.record)
        os.fdatasync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


def fdatasync_loop(directory: Path, record_size: int, seconds: float) -> dict[str, float]:
    """One writer appending and fdatasyncing records for `seconds`: ops/s and latency."""
    log = RawAppendLog(directory / "fdatasync.bin", record_size)
    latencies: list[float] = []
    try:
        end = time.perf_counter() + seconds
        start = time.perf_counter()
        while (now := time.perf_counter()) < end:
            log.append_sync()
            latencies.append(time.perf_counter() - now)
        elapsed = time.perf_counter() - start
    finally:
        log.close()
    return throughput(len(latencies), elapsed, latencies)


# -- persist-queue (SQLite) -----------------------------------------------------------


class PersistQueueSQLite:
    """persist-queue's durable acknowledging SQLite queue.

    `auto_commit=True` commits every put, get and ack as its own transaction; SQLite
    runs in WAL journal mode (set by persist-queue) with its default
    ``synchronous=FULL``, so each commit is fsync'd. `multithreading=True` lets the
    concurrent case put from several threads (persist-queue serialises them).
    """

    def __init__(self, directory: Path, *, multithreading: bool = True) -> None:
        self.directory = directory
        self.queue = persistqueue.SQLiteAckQueue(
            str(directory), auto_commit=True, multithreading=multithreading
        )

    def settings(self) -> dict[str, Any]:
        with sqlite3.connect(self.directory / "data.db") as db:
            journal = db.execute("PRAGMA journal_mode").fetchone()[0]
        # the connection persist-queue commits puts on
        putter: sqlite3.Connection = getattr(self.queue, "_putter")  # noqa: B009
        synchronous = putter.execute("PRAGMA synchronous").fetchone()[0]
        return {
            "class": "persistqueue.SQLiteAckQueue",
            "auto_commit": True,
            "journal_mode": journal,
            "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(synchronous),
            "sqlite": sqlite3.sqlite_version,
        }

    def put(self, item: bytes) -> None:
        self.queue.put(item)

    def put_get_ack(self, item: bytes) -> None:
        """One durable message life: put, take it (marked unacked), ack it."""
        self.queue.put(item)
        taken = self.queue.get(block=False, raw=True)
        self.queue.ack(id=taken["pqid"])

    def concurrent_puts(self, threads: int, per_thread: int, item: bytes) -> float:
        """Puts per second with `threads` threads each putting `per_thread` items."""

        def putter() -> None:
            for _ in range(per_thread):
                self.queue.put(item)

        workers = [threading.Thread(target=putter) for _ in range(threads)]
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return threads * per_thread / (time.perf_counter() - started)

    def close(self) -> None:
        self.queue.close()


# -- Redis, appendfsync always --------------------------------------------------------


class RedisAlwaysServer:
    """A private redis-server that fsyncs its append-only file before every reply."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not installed (Debian package redis-server)")
        self.port = free_port()
        self.dir = directory / "redis"
        self.dir.mkdir()
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
            if await _redis_answers(self.port):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    async def settings(self) -> dict[str, Any]:
        client = aioredis.Redis(port=self.port, decode_responses=True)
        try:
            config = await client.config_get("append*")
            info = await client.info("server")
        finally:
            await client.aclose()
        return {
            "redis_version": info.get("redis_version"),
            "appendonly": config.get("appendonly"),
            "appendfsync": config.get("appendfsync"),
        }

    async def rpush_load(
        self, connections: int, window: int, seconds: float, record: bytes
    ) -> dict[str, float]:
        """RPUSH over `connections` redis-py clients, `window` in flight on each."""
        clients = [
            aioredis.Redis(port=self.port, single_connection_client=False, max_connections=window)
            for _ in range(connections)
        ]
        try:

            def lane(c: aioredis.Redis) -> Callable[[], Awaitable[Any]]:
                async def rpush() -> Any:
                    return await c.rpush("q", record)

                return rpush

            await clients[0].delete("q")
            return await closed_loop([lane(c) for c in clients], window, seconds)
        finally:
            for c in clients:
                await c.aclose()

    def redis_benchmark(
        self,
        connections: int,
        window: int,
        record_size: int,
        requests: int,
        port: int | None = None,
    ) -> dict[str, float]:
        """The same load from the C client ``redis-benchmark``: Redis's own ceiling,
        free of the Python client overhead that bounds the redis-py figures. `port`:
        another way in (an SSH tunnel). Empty if redis-benchmark is not installed."""
        binary = shutil.which("redis-benchmark")
        if binary is None:
            return {}
        out = subprocess.run(
            [
                binary, "-p", str(port or self.port), "-c", str(connections), "-P", str(window),
                "-n", str(requests), "-d", str(record_size), "-t", "rpush", "--csv",
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

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- an OpenSSH tunnel ----------------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class OpenSSHTunnel:
    """``ssh -N -L`` through a private ``sshd`` on a free loopback port, with throwaway
    Ed25519 keys made here: Redis reached through it is the fair baseline for a
    secured transport (OpenSSH's default cipher and key exchange)."""

    def __init__(self, directory: Path, target_port: int) -> None:
        tools = {name: shutil.which(name) for name in ("ssh", "ssh-keygen")}
        sshd = shutil.which("sshd") or (
            "/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None
        )
        if sshd is None or None in tools.values():
            raise RuntimeError("OpenSSH not installed (Debian packages openssh-server, -client)")
        d = directory / "openssh"
        d.mkdir()
        for name in ("host_key", "client_key"):
            subprocess.run(
                [str(tools["ssh-keygen"]), "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                check=True,
            )
        (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
        self.ssh_port = free_port()
        self.port = free_port()
        config = d / "sshd_config"
        config.write_text(
            f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nAllowTcpForwarding yes\n"
            "PermitRootLogin prohibit-password\n"
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege-separation dir
        self.sshd = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._ssh_argv = [
                str(tools["ssh"]), "-N", "-p", str(self.ssh_port), "-i", str(d / "client_key"),
                "-L", f"127.0.0.1:{self.port}:127.0.0.1:{target_port}",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                "-o", "LogLevel=ERROR", f"{getpass.getuser()}@127.0.0.1",
        ]  # fmt: skip
        self.ssh: subprocess.Popen[bytes] | None = None

    async def wait(self) -> None:
        """Start ``ssh -L`` once sshd listens; return when Redis answers through it."""
        for _ in range(200):
            if _listening(self.ssh_port):
                break
            await asyncio.sleep(0.05)
        self.ssh = subprocess.Popen(  # noqa: ASYNC220 - started once, returns at once
            self._ssh_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(200):
            if self.ssh.poll() is not None:
                raise RuntimeError("ssh -L exited (sshd refused the throwaway key?)")
            if await _redis_answers(self.port):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the OpenSSH tunnel did not come up")

    def stop(self) -> None:
        for proc in (self.ssh, self.sshd):
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- classical SSH --------------------------------------------------------------------

CLASSICAL_SSH = "ssh-ed25519+curve25519-sha256"


@dataclass
class SSHEndpoint:
    """A listening asyncssh server and the client options that reach it."""

    label: str
    server: asyncssh.SSHAcceptor
    connect_options: dict[str, Any]

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def noop_session(process: asyncssh.SSHServerProcess[str]) -> None:
    process.exit(0)


async def classical_ssh_endpoint() -> SSHEndpoint:
    """Ed25519 host and user keys, curve25519-sha256, AES-256-GCM, on 127.0.0.1."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    classical = {
        "kex_algs": ["curve25519-sha256"],
        "encryption_algs": ["aes256-gcm@openssh.com"],
        "mac_algs": ["hmac-sha2-256-etm@openssh.com"],
        "compression_algs": ["none"],
        "signature_algs": ["ssh-ed25519"],
    }
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(
            user_key.export_public_key().decode()
        ),
        process_factory=noop_session,
        **classical,
    )  # fmt: skip
    port = server.sockets[0].getsockname()[1]
    options = {
        **classical,
        "server_host_key_algs": ["ssh-ed25519"],
        "host": "127.0.0.1", "port": port, "username": "bench", "client_keys": [user_key],
        "known_hosts": asyncssh.import_known_hosts(
            f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}"
        ),
        "agent_path": None, "config": (),
    }  # fmt: skip
    return SSHEndpoint(CLASSICAL_SSH, server, options)


async def ssh_handshake(options: dict[str, Any]) -> float:
    """Seconds for TCP connect, key exchange, host-key check, user auth, and close."""
    start = time.perf_counter()
    conn = await asyncssh.connect(**options)
    conn.close()
    await conn.wait_closed()
    return time.perf_counter() - start


async def _redis_answers(port: int) -> bool:
    """Whether a Redis server answers PING on 127.0.0.1:`port` (directly or tunnelled)."""
    try:
        client = aioredis.Redis(port=port)
        await client.ping()
        await client.aclose()
    except (OSError, aioredis.ConnectionError):
        return False
    return True
