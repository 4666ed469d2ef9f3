"""Slow and hostile clients against the running daemon; a good client keeps being served.

Five processes misbehave at once (``hostile.py``): one never reads its replies, one
opens 1000 channels, one sends 4 GiB length prefixes, one sends random bytes after
the handshake, one sends random bytes to the TCP port before it. Meanwhile a
well-behaved client submits, leases and acks, and the daemon's resident memory
(VmRSS) is sampled throughout: it must stay under a generous bound.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import transport.ssh_algorithms  # noqa: F401
from tests.subprocesses import REPO, Operator, child_env, free_port
from transport.client import QueueClient
from transport.limits import ServiceLimits

from .harness import NIGHTLY, Serve, rss_kib
from .worker import block

MODES = ("noread", "channels", "bigframe", "garbage", "tcpjunk")
RSS_LIMIT_KIB = 400 * 1024
GOOD_ROUNDS = 5000 if NIGHTLY else 1000
TIMEOUT = 240.0 if NIGHTLY else 120.0
pytestmark = pytest.mark.timeout(1800 if NIGHTLY else 300)


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                self.samples.append(rss_kib(self.pid))
            except (OSError, AssertionError):
                return


def journal(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line]


def words(path: Path, word: str) -> list[list[str]]:
    return [f for f in journal(path) if f[0] == word]


async def test_hostile_clients_do_not_starve_a_good_one_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    data, port = tmp_path / "data", free_port()
    serve = Serve(tmp_path, data, port)
    hostiles: list[subprocess.Popen[bytes]] = []
    sampler: RssSampler | None = None
    try:
        await asyncio.to_thread(serve.wait_ready)
        op = Operator.of(data)
        sampler = RssSampler(serve.pid)
        sampler.start()
        await asyncio.sleep(0.5)
        baseline = max(sampler.samples)
        paths = {m: tmp_path / f"hostile-{m}.journal" for m in MODES}
        for mode in MODES:
            hostiles.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.faults.hostile",
                        mode,
                        str(port),
                        str(op.key),
                        str(paths[mode]),
                    ],
                    cwd=REPO,
                    env=child_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp_path / f"hostile-{mode}.stderr").open("wb"),
                )
            )

        def misbehaving_enough() -> bool:
            return (
                bool(words(paths["noread"], "BLOCKED"))
                and bool(words(paths["channels"], "HOLDING"))
                and len(words(paths["bigframe"], "CLOSED")) >= 5
                and len(words(paths["garbage"], "ROUND")) >= 5
                and len(words(paths["tcpjunk"], "DROPPED")) >= 20
            )

        good = 0
        deadline = time.monotonic() + TIMEOUT
        async with QueueClient.connect(
            "127.0.0.1", port, username="operator", client_keys=[op.key], known_hosts=op.known_hosts
        ) as client:
            while good < GOOD_ROUNDS or not misbehaving_enough():
                assert time.monotonic() < deadline, (
                    f"after {good} good rounds the hostiles did not all get going: "
                    + "; ".join(f"{m}: {journal(p)[-2:]}" for m, p in paths.items())
                )
                for h in hostiles:
                    assert h.poll() is None, f"a hostile client exited: {h.args!r}"
                mid = (await client.submit(block(good + 1), "sync"))["message_id"]
                lease = await client.lease(timeout=30)
                assert lease is not None
                assert lease["message_id"] == mid
                await client.ack(lease["lease_id"])
                assert (await client.ping()) is not None
                good += 1
        assert serve.proc.poll() is None
    finally:
        for h in hostiles:
            h.kill()
            h.wait(10)
        if sampler is not None:
            sampler.done.set()
            sampler.join(5)
        rc = serve.stop() if serve.proc.poll() is None else serve.proc.returncode
    assert rc == 0, serve.output()[-2000:]

    peak = max(sampler.samples)
    limit = ServiceLimits().max_channels_per_connection
    opened = len(words(paths["channels"], "OPENED"))
    refused = len(words(paths["channels"], "REFUSED"))
    big = {f[1] if len(f) > 1 else "" for f in words(paths["bigframe"], "CLOSED")}
    sent = max((int(f[1]) for f in words(paths["noread"], "SENT")), default=0)
    print(
        f"good rounds {good}; daemon VmRSS baseline {baseline // 1024} MiB, peak "
        f"{peak // 1024} MiB over {len(sampler.samples)} samples; noread sent {sent} pings "
        f"before the server stopped reading it; channels opened {opened}, refused {refused}; "
        f"4 GiB prefix answers {sorted(big)}; garbage rounds "
        f"{len(words(paths['garbage'], 'ROUND'))}; tcp junk connections "
        f"{len(words(paths['tcpjunk'], 'DROPPED'))}"
    )
    assert peak < RSS_LIMIT_KIB, f"daemon RSS peaked at {peak // 1024} MiB"
    assert opened == limit
    assert refused == 1000 - limit
    assert big == {"too_large"}, big
    assert not words(paths["bigframe"], "NOT_CLOSED")
    assert not words(paths["garbage"], "OPEN_AFTER_EOF")
