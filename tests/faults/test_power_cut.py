"""Power cuts under the running daemon: its whole data dir (log, host key, operator key,
authorized_keys, lock) is on ``powercut_fs`` (FUSE), which forgets every write that was
not fsync'd and every directory change whose directory was not fsync'd. Each cycle
SIGKILLs the daemon, kills the filesystem, remounts it from what was durable, and
restarts the daemon. The first cut comes right after the first start, while the keys it
generated are new. Compaction is set low, so cuts also land around compaction's rename +
directory fsync. The SIGKILL checker then holds the clients' journals against the log:
every ack held, nothing consumed came back; and every start presents the same host key.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import asyncssh
import pytest

from tests.subprocesses import Operator, free_port

from .checker import Incarnation, check
from .harness import NIGHTLY, Serve, Worker, cleanup, live_messages, log_path, wal_dump
from .powercut import Mount, fuse_unavailable, unmount

pytestmark = [
    pytest.mark.skipif(
        fuse_unavailable() is not None, reason=f"cannot mount FUSE: {fuse_unavailable()}"
    ),
    pytest.mark.timeout(3600 if NIGHTLY else 300),
]
CUTS = 40 if NIGHTLY else 6


def wait_for(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_power_cuts_under_the_daemon_keep_every_ack(tmp_path: Path) -> None:
    rng = random.Random()
    data, backing, port, stop = (
        tmp_path / "data",
        tmp_path / "backing",
        free_port(),
        tmp_path / "stop",
    )
    data.mkdir()
    (tmp_path / "serve.toml").write_text(
        "[durability]\ncompact_bytes = 65536\n"
        f'[node]\nsocket = "{tmp_path / "node.sock"}"\n'  # a socket needs no power cut
    )
    extra = ["--config", str(tmp_path / "serve.toml")]
    fs_log = tmp_path / "fs.log"
    serves: list[Serve] = []
    workers: list[Worker] = []
    fs = Mount(backing, data, fs_log)
    try:
        with cleanup(serves, workers):
            # First start on an empty data dir, cut at once: the keys it made must stay.
            serves.append(Serve(tmp_path, data, port, extra=extra))
            serves[-1].wait_ready()
            host_key = serves[-1].wait_line(r"^host key \S+: (.+) \(new\)$").group(1)
            operator_key = serves[-1].wait_line(r"^local operator key \S+: (.+) \(new\)$").group(1)
            serves[-1].kill()
            fs.cut()
            fs = Mount(backing, data, fs_log)
            serves.append(Serve(tmp_path, data, port, extra=extra))
            incarnations = [Incarnation(time.monotonic_ns(), serves[-1].wait_ready())]
            op = Operator.of(data)
            workers += [Worker("producer", t, port, op, tmp_path, stop) for t in (1, 2)]
            workers.append(Worker("consumer", 1, port, op, tmp_path, stop))
            producers, consumers = workers[:2], workers[2:]

            def acks() -> int:
                return sum(w.count("ACK") for w in producers)

            for _ in range(CUTS):
                before = acks()
                wait_for(lambda: acks() >= before + 20, "acks on this start")  # noqa: B023
                time.sleep(rng.uniform(0.0, 0.5))
                serves[-1].kill()
                fs.cut()
                incarnations[-1].killed_ns = time.monotonic_ns()
                fs = Mount(backing, data, fs_log)
                serves.append(Serve(tmp_path, data, port, extra=extra))
                incarnations.append(Incarnation(time.monotonic_ns(), serves[-1].wait_ready()))

            before = acks()
            wait_for(lambda: acks() >= before + 20, "acks on the last start")
            stop.touch()
            for w in workers:
                assert w.finish() == 0
            serves[-1].kill()  # and one more cut with the clients gone
            fs.cut()
            incarnations[-1].killed_ns = time.monotonic_ns()
            fs = Mount(backing, data, fs_log)
        records = wal_dump(log_path(data))
        operator = asyncssh.read_private_key(str(Operator.of(data).key))
        assert f"{operator.get_algorithm()} {operator.get_fingerprint('sha256')}" == operator_key
    finally:
        fs.proc.kill()
        fs.proc.wait(30)
        unmount(data)

    for serve in serves[1:]:  # the same host key after every cut, never a new one
        assert "(new" not in serve.output()
        assert serve.wait_line(r"^host key \S+: (.+)$", timeout=1).group(1) == host_key

    verdict = check(
        [w.lines() for w in producers],
        [w.lines() for w in consumers],
        incarnations,
        live_messages(records),
    )
    torn = sum(s.output().count("torn tail") for s in serves)
    compacted = bool(records) and records[0]["type"] == "checkpoint"
    print(
        f"{CUTS + 2} power cuts; {verdict.summary()}; torn tails cut at restart: {torn}; "
        f"log compacted: {compacted}"
    )
    assert not verdict.problems, "\n".join(verdict.problems[:30])
    assert verdict.acked > 0
    assert verdict.consumed > 0
