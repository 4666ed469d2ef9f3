"""The disk fills up under the running daemon: clear errors, no acked loss, and the
service takes submits again by itself once space returns.

As root the data dir is on a small tmpfs filled up with a filler file (the real
ENOSPC of a real filesystem). Without root, libfiu injects ENOSPC into write(2)
(``posix/io/rw/write``) of the running daemon instead; the test says which it used.
SPEC §4: a failed write is rolled back and reported to its caller (not fatal); only
a failed fsync is.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import transport.ssh_algorithms  # noqa: F401
from sidecar.errors import Unavailable
from tests.subprocesses import Operator, free_port
from transport.client import QueueClient

from .harness import Serve, Worker, cleanup, live_messages, log_path, wal_dump
from .worker import block

TMPFS_SIZE = 8 * 1024 * 1024
OWN = 900_000_000  # block numbers of this test's own submits
LEASED = 400  # more consume records than fit in a page of slack (the zeros ahead are used by then)


def try_mount_tmpfs(where: Path) -> str | None:
    """Mount a small tmpfs at ``where``; None when it worked, else why not."""
    if os.environ.get("QSSH_FAULT_NO_TMPFS") == "1":
        return "QSSH_FAULT_NO_TMPFS=1"
    if os.geteuid() != 0:
        return "not root"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


@contextlib.contextmanager
def full_disk(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(data dir, how the disk gets full): a tmpfs as root, else libfiu."""
    mnt = tmp_path / "small"
    why_not = try_mount_tmpfs(mnt)
    if why_not is None:
        try:
            yield mnt / "data", "tmpfs"
        finally:
            subprocess.run(["umount", "-l", str(mnt)], timeout=30, check=False)
        return
    if shutil.which("fiu-run") is None:
        pytest.skip(f"no small filesystem ({why_not}) and no libfiu (fiu-utils) to inject ENOSPC")
    print(f"ENOSPC injected with libfiu: no tmpfs ({why_not})")
    yield tmp_path / "data", "libfiu"


def fill(mnt: Path) -> Path:
    """Write a filler file until the filesystem says ENOSPC."""
    filler = mnt / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        for _ in range(TMPFS_SIZE // len(chunk) + 16):
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        else:
            raise AssertionError("the tmpfs never filled up")
    return filler


def fiu(pid: int, command: str) -> None:
    subprocess.run(["fiu-ctrl", "-c", command, str(pid)], check=True, timeout=30)


async def submit_ok(client: QueueClient, number: int) -> int:
    return int((await client.submit(block(number), "sync"))["message_id"])


async def test_enospc_gives_clear_errors_loses_nothing_and_resumes(tmp_path: Path) -> None:
    with full_disk(tmp_path) as (data, how):
        await run_enospc(tmp_path, data, how)


async def run_enospc(tmp_path: Path, data: Path, how: str) -> None:
    port, stop = free_port(), tmp_path / "stop"
    prefix = ["fiu-run", "-x"] if how == "libfiu" else []
    serves: list[Serve] = []
    workers: list[Worker] = []
    own: dict[int, int] = {}
    held: dict[str, Any] = {}
    consumed: set[int] = set()
    with cleanup(serves, workers):
        serves.append(Serve(tmp_path, data, port, prefix=prefix))
        await asyncio.to_thread(serves[0].wait_ready)
        op = Operator.of(data)
        workers.append(Worker("producer", 1, port, op, tmp_path, stop))
        client = await QueueClient.connect(
            "127.0.0.1", port, username="operator", client_keys=[op.key], known_hosts=op.known_hosts
        )
        try:
            own[await submit_ok(client, OWN)] = OWN
            await wait_for(lambda: workers[0].count("ACK") >= LEASED, "load")
            leases = [await client.lease(timeout=300) for _ in range(LEASED)]

            # -- the disk is full
            if how == "tmpfs":
                filler = fill(data.parent)
            else:
                fiu(serves[0].pid, f"enable name=posix/io/rw/write,failinfo={errno.ENOSPC}")
            # Refused from now on, except what still fits in the zeros the log keeps
            # written ahead (up to 1 MiB: a few thousand submits) or in its last page
            # (a real filesystem keeps that slack): those acks are kept like any other.
            refusals: list[str] = []
            for n in range(1, 8000):
                try:
                    own[await submit_ok(client, OWN + n)] = OWN + n
                except Unavailable as exc:
                    refusals.append(exc.message)
                    if len(refusals) >= 20:
                        break
            assert len(refusals) >= 20, f"only {len(refusals)} of {n} submits refused"
            assert all("ENOSPC" in m and "nothing of this batch was logged" in m for m in refusals)
            print(f"[{how}] full disk: {refusals[0]!r}")
            assert serves[0].proc.poll() is None, "a failed write must not stop the daemon"
            assert (await client.depth()) >= 1  # reads still work
            # an ack (a consume record) fails the same way, and its lease stays held; the
            # first few acks may still fit in the log's last page
            for lease in leases:
                assert lease is not None
                try:
                    await client.ack(lease["lease_id"])
                except Unavailable as exc:
                    ack_refusal = exc.message
                    held.update(lease)
                    break
                consumed.add(lease["message_id"])
            else:
                raise AssertionError(f"{LEASED} acks fitted on a full disk")
            assert "ENOSPC" in ack_refusal, ack_refusal
            print(f"[{how}] {len(consumed)} acks fitted in the log's last page, then refused")

            # -- space returns: the same daemon takes submits again
            if how == "tmpfs":
                filler.unlink()
            else:
                fiu(serves[0].pid, "disable name=posix/io/rw/write")
            for n in range(9000, 9020):
                own[await submit_ok(client, OWN + n)] = OWN + n
            await client.ack(held["lease_id"])  # the same lease, now with room
        finally:
            await client.close()
        before = workers[0].count("ACK")
        await wait_for(lambda: workers[0].count("ACK") > before + 20, "the producer to resume")
        stop.touch()
        assert await asyncio.to_thread(workers[0].finish) == 0
        failed = [f for f in workers[0].lines() if f[0] == "SUBFAIL"]
        assert serves[0].proc.poll() is None
        serves[0].kill()  # and a crash on top: the acks are on disk
        serves.append(Serve(tmp_path, data, port))
        await asyncio.to_thread(serves[1].wait_ready)
        assert serves[1].stop() == 0

    acked = {int(f[1]): int(f[2]) for f in workers[0].lines() if f[0] == "ACK"} | own
    live = live_messages(wal_dump(log_path(data)))
    consumed.add(held["message_id"])
    assert not consumed & set(live), "an ack (retried after ENOSPC or not) did not take"
    for mid in consumed:
        del acked[mid]
    lost = [mid for mid, n in acked.items() if live.get(mid, {}).get("block_number") != n]
    assert not lost, f"{len(lost)} acknowledged submits lost: {lost[:5]}"
    print(
        f"[{how}] acked {len(acked)} all recovered; producer saw {len(failed)} refusals "
        f"({sorted({f[2] for f in failed})}) while full; the daemon never stopped"
    )


async def wait_for(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
