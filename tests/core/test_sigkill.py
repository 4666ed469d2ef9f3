"""A real process doing sync submits and acks, SIGKILLed at random moments.

After every kill the parent reopens the queue and checks what the child had reported
as acknowledged: every acked submit that was not consumed is there with its content,
nothing reported consumed comes back, and ids never repeat.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sidecar import QppValidatorQueue
from tests.subprocesses import REPO, child_env

CYCLES = 200 if os.environ.get("QSSH_NIGHTLY") == "1" else 50


def _run_child(persist_dir: Path, seed: int, rng: random.Random) -> list[str]:
    env = child_env()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.core.kill_child", str(persist_dir), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
        # unbuffered: communicate() reads the raw pipe, so anything a buffered
        # readline() had read past the first line would be lost to the checker
        bufsize=0,
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    assert ready == b"R\n", (ready, child.stderr.read() if child.stderr else b"")
    time.sleep(rng.uniform(0.0, 0.15))
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    lines = out.decode().split("\n")
    return lines[:-1]  # the last piece may be a line cut by the kill


async def test_sigkill_never_loses_an_ack(tmp_path: Path) -> None:
    rng = random.Random(2026)
    acked: dict[int, int] = {}  # id -> block number
    consumed: set[int] = set()
    highest_seen = 0
    total_acks = 0
    for cycle in range(CYCLES):
        for line in _run_child(tmp_path, cycle + 1, rng):
            kind, *rest = line.split()
            if kind == "S":
                mid, number = int(rest[0]), int(rest[1])
                assert mid not in acked, f"id {mid} handed out twice"
                assert mid > highest_seen, f"id {mid} not above every id seen before the restart"
                acked[mid] = number
                total_acks += 1
            elif kind == "C":
                consumed.add(int(rest[0]))
        q = await QppValidatorQueue.open("killed", tmp_path)
        items = {i.message_id: i for i in q._state.ready_items()}
        for mid, number in acked.items():
            # (a consume cut by the kill may have reached the disk: at-most-once pop)
            if mid not in consumed and mid in items:
                assert items[mid].message.get("block_number") == number
        assert not (set(items) & consumed), "a consumed message was delivered again"
        missing = {m for m in acked if m not in consumed and m not in items}
        # anything missing was taken by a consume whose report the kill cut off: the
        # child has one consumer, so at most one message per cycle
        assert len(missing) <= 1, missing
        consumed |= missing
        highest_seen = max([highest_seen, *acked, *items])
        await q.close()
    assert total_acks > CYCLES  # the kills did land while work was going on
