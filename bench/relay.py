"""Relay alice -> bob against a direct submit to bob, side by side in the same run.

Prints one JSON object. Two real ``qssh-sidecar serve`` processes on 127.0.0.1; alice
has bob as a peer (docs/relay.md). In each round, interleaved:
  - relay: ``--messages`` sync submits with ``broadcast`` to alice (``--callers``
    concurrent, one SSH connection); a consumer on bob (16 concurrent lease+ack loops
    on one connection) leases and acks each one as it arrives;
  - direct: the same submits (without ``broadcast``) straight to bob, the same consumer.
Reported per case, medians over rounds: msgs/s poppable at bob (count / time from the
first submit to the last lease at bob), and p50/p99 ms from the ack of the submit
(at the origin, or at bob for direct) to the message being leased at bob. A round in
which no message reaches bob for STALL_SECONDS fails the run, with both serve logs' tails.

    python bench/relay.py [--rounds 3] [--messages 2000] [--callers 16] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncssh

import transport.ssh_algorithms  # noqa: F401  (registers ssh-falcon512)
from bench.baselines import free_port
from bench.stats import dumps, interleave, median, median_fields, percentile, ratio
from transport.client import QueueClient
from transport.keys import known_hosts_line, public_line

ALG = "ssh-falcon512"
CONSUMERS = 16  # lease+ack loops at bob: enough that consuming is never the bottleneck
STALL_SECONDS = 60.0  # no new message at bob for this long: the run fails, saying why
REPO = Path(__file__).resolve().parent.parent


class Sidecar:
    def __init__(self, root: Path, name: str) -> None:
        self.root = root / name
        self.root.mkdir()
        self.name = name
        self.port = free_port()
        self.host_key = asyncssh.generate_private_key(ALG)
        self.operator = asyncssh.generate_private_key(ALG)
        self.proc: subprocess.Popen[bytes] | None = None
        self.accepts: dict[str, asyncssh.SSHKey] = {}  # peers' relay keys we let in
        _write_key(self.root / "host_key", self.host_key)
        (self.root / "known_hosts").write_text(
            known_hosts_line("127.0.0.1", self.port, self.host_key) + "\n"
        )

    def configure(self, peers: list[Sidecar]) -> None:
        """Relay to `peers` (a key of ours for each, added to what they accept); call
        for a sidecar only after every sidecar relaying to it."""
        lines = [f'roles="producer,consumer,admin" {public_line(self.operator)} operator']
        lines += [f'roles="peer" {public_line(k)} {n}' for n, k in self.accepts.items()]
        (self.root / "authorized_keys").write_text("\n".join(lines) + "\n")
        toml = [
            f'instance = "{self.name}"\ndata_dir = "data"\nlisten = "127.0.0.1:{self.port}"',
            'host_key = "host_key"\nauthorized_keys = "authorized_keys"',
            '[metrics]\nlisten = ""\n[hardware]\nuse_udev = false\nchar_devices = []',
            "[relay]\nbatch = 256",
        ]
        for peer in peers:
            key = asyncssh.generate_private_key(ALG)
            _write_key(self.root / f"to_{peer.name}", key)
            peer.accepts[self.name] = key
            pin = known_hosts_line("127.0.0.1", peer.port, peer.host_key)
            toml.append(
                f'[[peers]]\nname = "{peer.name}"\naddress = "127.0.0.1:{peer.port}"\n'
                f'host_key = "{pin}"\nidentity = "to_{peer.name}"'
            )
        (self.root / "sidecar.toml").write_text("\n".join(toml) + "\n")

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        log = self.root / "serve.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sidecar.cli", "serve", "--config", "sidecar.toml"],
                cwd=self.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while b"ready in " not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)

    def log_tail(self) -> str:
        log = self.root / "serve.log"
        return log.read_text(errors="replace")[-1500:] if log.exists() else ""

    def connect(self) -> Any:
        return QueueClient.connect(
            "127.0.0.1",
            self.port,
            username="operator",
            client_keys=[self.operator],
            known_hosts=self.root / "known_hosts",
        )


def _write_key(path: Path, key: asyncssh.SSHKey) -> None:
    path.write_bytes(key.export_private_key())
    os.chmod(path, 0o600)


def _block(n: int) -> dict[str, Any]:
    return {"kind": "block_import", "block_hash": f"{n:064x}", "block_number": n, "timestamp": n}


async def one_round(
    producer: Any, consumer: Any, messages: int, callers: int, broadcast: bool, base: int
) -> dict[str, float]:
    acked: dict[int, float] = {}  # block number -> ack time
    seen: dict[int, float] = {}  # block number -> leased at bob
    numbers = iter(range(base, base + messages))

    async def produce() -> None:
        for n in numbers:
            await producer.submit(_block(n), "sync", broadcast=broadcast)
            acked[n] = time.perf_counter()

    async def consume() -> None:
        while len(seen) < messages:
            lease = await consumer.lease(timeout=60, wait=1)
            if lease is None:
                if time.perf_counter() - max(seen.values(), default=started) > STALL_SECONDS:
                    raise Stalled(f"{len(seen)} of {messages} messages reached bob")
                continue
            n = lease["message"]["block_number"]
            if base <= n < base + messages:
                seen[n] = time.perf_counter()
            await consumer.ack(lease["lease_id"])

    started = time.perf_counter()
    await asyncio.gather(
        *(consume() for _ in range(CONSUMERS)), *(produce() for _ in range(callers))
    )
    elapsed = max(seen.values()) - started
    lag = [max(0.0, seen[n] - acked[n]) for n in acked]
    return {
        "msgs_per_s": messages / elapsed,
        "p50_ms": percentile(lag, 0.50) * 1000,
        "p99_ms": percentile(lag, 0.99) * 1000,
    }


class Stalled(Exception):
    """No new message arrived at bob for STALL_SECONDS (a relay link that never came up)."""


async def bench(rounds: int, messages: int, callers: int, root: Path) -> dict[str, Any]:
    alice, bob = Sidecar(root, "alice"), Sidecar(root, "bob")
    alice.configure([bob])
    bob.configure([])
    try:
        # bob first: alice's link finds it listening (no backoff while bob starts, and
        # no outgoing connection of alice's can take the port bob is about to listen on)
        bob.start()
        alice.start()
        async with alice.connect() as at_alice, bob.connect() as at_bob, bob.connect() as cons:
            counter = iter(range(1, 10**9, messages))

            def case(producer: Any, broadcast: bool) -> Any:
                return lambda: one_round(
                    producer, cons, messages, callers, broadcast, next(counter)
                )

            cases = [("relay", case(at_alice, True)), ("direct", case(at_bob, False))]
            samples = await interleave(cases, rounds)
    except Stalled as exc:
        logs = f"--- alice\n{alice.log_tail()}\n--- bob\n{bob.log_tail()}"
        raise SystemExit(f"{exc} in {STALL_SECONDS:.0f} s\n{logs}") from None
    finally:
        alice.stop()
        bob.stop()
    result = {name: median_fields(runs) for name, runs in samples.items()}
    return {
        "figures": result,
        "ratios": {
            "relay_vs_direct_msgs_per_s": median(
                ratio(r["msgs_per_s"], d["msgs_per_s"])
                for r, d in zip(samples["relay"], samples["direct"], strict=True)
            )
        },
        "settings": {"rounds": rounds, "messages": messages, "callers": callers},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--callers", type=int, default=16)
    p.add_argument("--dir", type=Path, default=None, help="where the logs go (a real disk)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        result = asyncio.run(bench(a.rounds, a.messages, a.callers, Path(tmp)))
    sys.stdout.buffer.write(dumps(result) + b"\n")


if __name__ == "__main__":
    main()
