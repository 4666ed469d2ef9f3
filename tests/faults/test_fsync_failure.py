"""fsync fails under load (libfiu): every pending ack fails, new work is refused, the
daemon exits 1, and a restart recovers every acknowledged submit.

The daemon runs under ``fiu-run -x`` (libfiu's POSIX wrappers preloaded, nothing
enabled); at a moment of our choosing ``fiu-ctrl`` makes every ``posix/io/sync/*``
call (fsync, fdatasync, sync_file_range) fail with EIO in the running process.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import transport.ssh_algorithms  # noqa: F401
from sidecar.errors import Unavailable
from tests.subprocesses import Operator, free_port
from transport.client import QueueClient

from .harness import Serve, Worker, cleanup, live_messages, log_path, wal_dump
from .worker import block

pytestmark = pytest.mark.skipif(
    shutil.which("fiu-run") is None or shutil.which("fiu-ctrl") is None,
    reason="fiu-utils (fiu-run, fiu-ctrl) not installed",
)
PRODUCERS = 2
EIO = 5
OWN = 900_000_001  # block numbers of this test's own submits (producers use tag * 10^7 + n)


async def wait_for(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_fsync_failure_fails_pending_acks_refuses_work_and_restart_keeps_acks(
    tmp_path: Path,
) -> None:
    data, port, stop = tmp_path / "data", free_port(), tmp_path / "stop"
    serves: list[Serve] = []
    workers: list[Worker] = []
    with cleanup(serves, workers):
        serves.append(Serve(tmp_path, data, port, prefix=["fiu-run", "-x"]))
        await asyncio.to_thread(serves[0].wait_ready)
        op = Operator.of(data)
        workers += [
            Worker("producer", t, port, op, tmp_path, stop) for t in range(1, PRODUCERS + 1)
        ]
        await wait_for(lambda: all(w.count("ACK") >= 100 for w in workers), "load")
        client = await QueueClient.connect(
            "127.0.0.1", port, username="operator", client_keys=[op.key], known_hosts=op.known_hosts
        )
        try:
            mine = (await client.submit(block(OWN), "sync"))["message_id"]

            subprocess.run(
                [
                    "fiu-ctrl",
                    "-c",
                    f"enable name=posix/io/sync/*,failinfo={EIO}",
                    str(serves[0].pid),
                ],
                check=True,
                timeout=30,
            )
            failed_at = time.monotonic_ns()
            with pytest.raises(Unavailable) as first:
                await client.submit(block(OWN + 1), "sync")
            # the log's error (or, on a very slow machine, the shutdown it already caused)
            assert any(w in first.value.message for w in ("fsync failed", "shutting down"))
            # refused from now on: the log's error, or the shutdown that follows it
            with pytest.raises(Unavailable) as second:
                await client.submit(block(OWN + 2), "sync")
            print(f"after the failure: {first.value.message!r}; then {second.value.message!r}")
        finally:
            await client.close()

        rc = await asyncio.to_thread(serves[0].proc.wait, 60)
        assert rc == 1, serves[0].output()[-2000:]
        stop.touch()
        for w in workers:
            assert await asyncio.to_thread(w.finish) == 0

        journals = [w.lines() for w in workers]
        acked = {int(f[1]): int(f[2]) for j in journals for f in j if f[0] == "ACK"}
        acked[mine] = OWN
        late = [f for j in journals for f in j if f[0] == "ACK" and int(f[3]) > failed_at]
        assert not late, f"acked although sent after fsync failed: {late[:3]}"
        # every submit in flight at the failure got the log's error, not a lost link
        for j in journals:
            fails = [f for f in j if f[0] == "SUBFAIL"]
            assert fails, "a producer saw no failure"
            assert fails[0][3] == "fsync", fails[0]
        refused = {int(f[1]) for j in journals for f in j if f[0] == "SUBFAIL"}

        serves.append(Serve(tmp_path, data, port))  # no libfiu this time
        await asyncio.to_thread(serves[1].wait_ready)
        assert serves[1].stop() == 0

    live = live_messages(wal_dump(log_path(data)))
    logged = {mid: int(str(m["block_number"])) for mid, m in live.items()}
    lost = {mid: n for mid, n in acked.items() if logged.get(mid) != n}
    assert not lost, f"{len(lost)} acknowledged submits not recovered"
    # what the log holds beyond the acks: only submits that were told they failed
    refused |= {OWN + 1, OWN + 2}
    extra = {n for mid, n in logged.items() if mid not in acked}
    assert extra <= refused, f"unexplained messages in the log: {sorted(extra - refused)[:5]}"
    print(
        f"acked {len(acked)} all recovered; {len(refused)} submits failed with the log "
        f"and {len(extra)} of them were on disk anyway (written, fsync unknown)"
    )
