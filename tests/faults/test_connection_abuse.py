"""Strangers flood the real daemon's SSH port; an authorized client still gets in.

A separate process (``abuser.py``) holds 500 idle TCP connections, runs slow-loris
and banner floods, from one loopback address and from several (127.0.0.2 …), and
reconnects whenever the server closes on it. Meanwhile the local operator connects
and submits again and again, each round retrying until a generous deadline. The
daemon runs with its default admission settings (MaxStartups 10:30:100,
PerSourceMaxStartups 10, LoginGraceTime 10 s, PerSourcePenalties on).

Checked: every round of the good client succeeds within the deadline, the daemon's
resident memory stays bounded, and its log stays under a fixed number of lines (the
refusals are summarised, not logged one by one).
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import transport.ssh_algorithms  # noqa: F401
from tests.subprocesses import REPO, Operator, child_env, free_port

from .harness import NIGHTLY, Serve
from .test_hostile_clients import RssSampler

ATTACK_SECONDS = 60.0 if NIGHTLY else 15.0
ROUND_DEADLINE = 30.0  # one connect + submit, retried while refused
RSS_GROWTH_LIMIT_KIB = 150 * 1024
MAX_LOG_LINES = 40  # start-up lines included; the rest 2 per refusal_log_interval
NEEDED_FDS = 4096
pytestmark = pytest.mark.timeout(600 if NIGHTLY else 180)

ONE = "127.0.0.2"
SEVERAL = ",".join(f"127.0.0.{i}" for i in range(3, 9))
ATTACK = [
    f"idle:250:{ONE}",
    f"idle:250:{SEVERAL}",
    f"slowloris:60:{ONE},{SEVERAL}",
    "banner:30:127.0.0.9,127.0.0.10",
]


def raise_fd_limit() -> None:
    """500 attacking sockets (inherited limit) plus the daemon's own: raise the soft
    limit up to the hard one if it is lower than needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NEEDED_FDS if hard == resource.RLIM_INFINITY else min(NEEDED_FDS, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 1200:
        pytest.skip(f"the fd limit is {soft} (hard {hard}); the attack needs about 1200")


async def one_round(op: Operator, port: int, n: int) -> tuple[float, int]:
    """Connect and submit once, retrying refused connections: (seconds, attempts)."""
    began = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        try:
            async with op.connect(port, connect_timeout=5) as client:
                result = await client.submit(
                    {"kind": "telemetry", "name": f"good{n}", "value": 1.0}, "sync"
                )
                assert result["persisted"]
                return time.monotonic() - began, attempts
        except Exception as exc:  # refused or reset by admission: try again
            if time.monotonic() - began > ROUND_DEADLINE:
                raise AssertionError(
                    f"round {n}: no connect+submit within {ROUND_DEADLINE}s "
                    f"({attempts} attempts, last {exc!r})"
                ) from exc
            await asyncio.sleep(0.05)


def summary(journal: Path) -> dict[str, int]:
    if not journal.exists():
        return {}
    return {w: int(n) for w, n in (line.split() for line in journal.read_text().splitlines())}


async def test_strangers_flooding_the_port_do_not_lock_out_a_key_holder(tmp_path: Path) -> None:
    raise_fd_limit()
    data, port = tmp_path / "data", free_port()
    serve = Serve(tmp_path, data, port)
    sampler: RssSampler | None = None
    abuser: subprocess.Popen[bytes] | None = None
    journal = tmp_path / "abuser.journal"
    latencies: list[float] = []
    attempts: list[int] = []
    try:
        await asyncio.to_thread(serve.wait_ready)
        op = Operator.of(data)
        lines_before = len(serve.output().splitlines())  # start-up
        sampler = RssSampler(serve.pid)
        sampler.start()
        await asyncio.sleep(0.5)
        baseline = max(sampler.samples)
        abuser = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.abuser",
                str(port),
                str(journal),
                str(ATTACK_SECONDS),
                *ATTACK,
            ],
            cwd=REPO,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "abuser.stderr").open("wb"),
        )
        await asyncio.sleep(2.0)  # let the flood build up
        n = 0
        while abuser.poll() is None:
            seconds, tries = await one_round(op, port, n)
            latencies.append(seconds)
            attempts.append(tries)
            n += 1
            await asyncio.sleep(0.2)
        assert abuser.returncode == 0, (tmp_path / "abuser.stderr").read_text()[-2000:]
        assert serve.proc.poll() is None
        # the good client's own "accepted" lines are one per round: not the strangers'
        log_lines = [
            line for line in serve.output().splitlines() if "accepted operator" not in line
        ]
    finally:
        if abuser is not None and abuser.poll() is None:
            abuser.kill()
            abuser.wait(10)
        if sampler is not None:
            sampler.done.set()
            sampler.join(5)
        rc = serve.stop() if serve.proc.poll() is None else serve.proc.returncode
    assert rc == 0, serve.output()[-2000:]

    attack = summary(journal)
    peak = max(sampler.samples)
    ordered = sorted(latencies)
    print(
        f"good rounds {len(latencies)} all ok; connect+submit p50 "
        f"{ordered[len(ordered) // 2]:.3f}s max {ordered[-1]:.3f}s, attempts max "
        f"{max(attempts)}; daemon VmRSS baseline {baseline // 1024} MiB peak "
        f"{peak // 1024} MiB; log lines during the attack "
        f"{len(log_lines) - lines_before} (not counting the good client's); attacker {attack}"
    )
    assert attack.get("connected", 0) >= 500, attack
    assert attack.get("refused", 0) > 0, attack
    assert len(latencies) >= 5
    assert peak - baseline < RSS_GROWTH_LIMIT_KIB, f"RSS grew {(peak - baseline) // 1024} MiB"
    assert len(log_lines) <= MAX_LOG_LINES, "\n".join(log_lines[-40:])
