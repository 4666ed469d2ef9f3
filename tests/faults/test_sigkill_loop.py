"""SIGKILL the real daemon again and again under load from real client processes.

Three producers submit sync, two consumers lease and ack, all through SSH to
``qssh-sidecar serve``; the daemon is SIGKILLed at random moments and restarted on
the same data dir and port (30 times, 200 with ``QSSH_NIGHTLY=1``). Compaction is set
low so crashes also land inside compactions. The checker (``checker.py``) then holds
every client's journal against the final log: zero acked-lost, zero
consumed-redelivered, ids never handed out twice and increasing across restarts.
"""

from __future__ import annotations

import bisect
import os
import random
import re
import time
from pathlib import Path

import pytest

from tests.subprocesses import Operator, free_port

from .checker import Incarnation, check
from .harness import NIGHTLY, Serve, Worker, cleanup, live_messages, log_path, wal_dump

KILLS = 200 if NIGHTLY else 30
pytestmark = pytest.mark.timeout(3600 if NIGHTLY else 300)
PRODUCERS = 3
CONSUMERS = 2
EARLY_KILLS = 0.2  # how often the next start is killed too, while still starting
LOAD_TIMEOUT = 60.0


def wait_for(predicate: object, what: str, timeout: float = LOAD_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigkill_loop_loses_no_ack_and_redelivers_no_consumed(tmp_path: Path) -> None:
    seed = int(os.environ.get("QSSH_FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"seed {seed} (QSSH_FAULT_SEED to replay the kill moments); {KILLS} kills")
    (tmp_path / "serve.toml").write_text("[durability]\ncompact_bytes = 262144\n")
    extra = ["--config", str(tmp_path / "serve.toml")]
    data, port, stop = tmp_path / "data", free_port(), tmp_path / "stop"
    serves: list[Serve] = []
    workers: list[Worker] = []
    with cleanup(serves, workers):
        serves.append(Serve(tmp_path, data, port, extra=extra))
        incarnations = [Incarnation(time.monotonic_ns(), serves[-1].wait_ready())]
        op = Operator.of(data)
        workers += [Worker("producer", t, port, op, tmp_path, stop) for t in range(PRODUCERS)]
        workers += [Worker("consumer", t, port, op, tmp_path, stop) for t in range(CONSUMERS)]
        producers, consumers = workers[:PRODUCERS], workers[PRODUCERS:]
        wait_for(lambda: all(w.count("ACK") > 0 for w in producers), "producers to get going")
        wait_for(lambda: all(w.count("CONSUMED") > 0 for w in consumers), "consumers")

        def progress() -> int:
            return sum(w.journal_bytes() for w in workers)

        early = 0
        for _ in range(KILLS):
            # a random moment once this start is under load
            before = progress()
            wait_for(lambda: progress() > before + 500, "clients on this start")  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.6))
            serves[-1].kill()
            incarnations[-1].killed_ns = time.monotonic_ns()
            if rng.random() < EARLY_KILLS:
                # and the next start killed while recovering the log or binding its port
                early += 1
                serves.append(Serve(tmp_path, data, port, extra=extra))
                time.sleep(rng.uniform(0.0, 0.6))
                serves[-1].kill()
                killed = time.monotonic_ns()
                if re.search(r"^listening ", serves[-1].output(), re.MULTILINE):
                    # it may have served clients: it counts as a start
                    next_id = int(serves[-1].wait_line(r"next id (\d+)").group(1))
                    incarnations.append(Incarnation(killed, next_id, killed))
            serves.append(Serve(tmp_path, data, port, extra=extra))
            incarnations.append(Incarnation(time.monotonic_ns(), serves[-1].wait_ready()))

        # the clients get going again on the last start, then stop on their own
        before = progress()
        wait_for(lambda: progress() > before + 5000, "clients on the last start")
        stop.touch()
        for w in workers:
            assert w.finish() == 0
        assert serves[-1].stop() == 0  # graceful stop after all that

    records = wal_dump(log_path(data))
    verdict = check(
        [w.lines() for w in producers],
        [w.lines() for w in consumers],
        incarnations,
        live_messages(records),
    )
    compacted = bool(records) and records[0]["type"] == "checkpoint"
    loaded = loaded_kills(producers, incarnations)
    print(
        f"{KILLS + early} kills: {KILLS} under load ({loaded} of a start that had acked), "
        f"{early} of a start still starting; {verdict.summary()}"
    )
    print(f"log: {len(records)} records at the end; compacted at least once: {compacted}")
    assert not verdict.problems, "\n".join(verdict.problems[:30])
    assert verdict.consumed > 0
    assert verdict.live + verdict.consumed > 0
    assert loaded > 0


def loaded_kills(producers: list[Worker], incarnations: list[Incarnation]) -> int:
    """Kills of a start that had acknowledged at least one submit by then."""
    times = sorted(int(f[4]) for w in producers for f in w.lines() if f[0] == "ACK")
    n = 0
    for inc in incarnations:
        if inc.killed_ns is not None:
            first = bisect.bisect_right(times, inc.ready_ns)
            n += first < len(times) and times[first] < inc.killed_ns
    return n
