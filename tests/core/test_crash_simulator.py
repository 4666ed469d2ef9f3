"""Crash simulator: a mixed workload stopped at >= 1000 crash points.

Each run drives the real queue over `SimDisk`, cuts the power at operation K, builds a
disk image from what a crash may keep (see simfs.py), recovers, and checks:
every acknowledged sync submit is there (unless it was consumed), nothing consumed is
delivered again, ids never repeat, and recovery never fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from dataclasses import dataclass, field

import pytest

from sidecar import LogFailed, QppValidatorQueue, QueueMessage, SidecarError, Unavailable
from tests.core.simfs import SimDisk

DIR = "/sim"
NIGHTLY = os.environ.get("QSSH_NIGHTLY") == "1"


def _msg(rng: random.Random, i: int) -> QueueMessage:
    kind = rng.choice(["block_import", "transaction", "gossip", "telemetry"])
    if kind == "block_import":
        return QueueMessage.create(kind, block_hash=rng.randbytes(32), block_number=i, timestamp=i)
    if kind == "transaction":
        return QueueMessage.create(
            kind, tx_hash=rng.randbytes(32), tx_data=rng.randbytes(rng.randint(0, 600))
        )
    if kind == "gossip":
        return QueueMessage.create(kind, topic="t", data=rng.randbytes(rng.randint(0, 300)))
    return QueueMessage.create(kind, name="n", value=i)


@dataclass
class Observed:
    """What the workload saw acknowledged before the crash."""

    acked: dict[int, QueueMessage] = field(default_factory=dict)  # sync submits acked
    issued: set[int] = field(default_factory=set)  # every id handed out
    consumed: set[int] = field(default_factory=set)  # pop returned / ack returned
    # a pop or ack cut by the crash: its consume record may or may not have survived
    # (at-most-once: such a message may be gone without having been delivered)
    in_flight: set[int] = field(default_factory=set)


async def _workload(q: QppValidatorQueue, rng: random.Random, obs: Observed, steps: int) -> None:
    leases = []

    async def sync_submit(i: int) -> None:
        m = _msg(rng, i)
        mid = await q.submit_sync(m, submitted_by="sim")
        obs.acked[mid] = m
        obs.issued.add(mid)

    try:
        for i in range(steps):
            r = rng.random()
            if r < 0.30:
                await asyncio.gather(*(sync_submit(i) for _ in range(rng.randint(1, 4))))
            elif r < 0.45:
                obs.issued.add(await q.submit_async(_msg(rng, i), submitted_by="sim"))
            elif r < 0.60:
                held = q._state.ready_items() + q._state.leased_items()
                before = {i.message_id for i in held}
                try:
                    h = await q.pop()
                except (LogFailed, Unavailable):
                    obs.in_flight |= before - {i.message_id for i in q._state.ready_items()}
                    raise
                if h is not None:
                    obs.consumed.add(h.consume().message_id)
            elif r < 0.72:
                lease = await q.lease(timeout=rng.choice([0.0001, 60]))
                if lease is not None:
                    leases.append(lease)
            elif r < 0.82 and leases:
                lease = leases.pop(rng.randrange(len(leases)))
                try:
                    obs.in_flight.add(lease.message_id)
                    await q.ack(lease)
                    obs.in_flight.discard(lease.message_id)
                    obs.consumed.add(lease.message_id)
                except SidecarError as exc:
                    if isinstance(exc, Unavailable):
                        raise
                    obs.in_flight.discard(lease.message_id)
            elif r < 0.88 and leases:
                lease = leases.pop(rng.randrange(len(leases)))
                try:
                    await q.release(lease)
                except SidecarError as exc:
                    if isinstance(exc, Unavailable):
                        raise
            elif r < 0.93:
                await q.compact_wal()
            else:
                await asyncio.sleep(0)
        if rng.random() < 0.3:
            await q.close()
    except (LogFailed, Unavailable):
        # the power went off; let the dead queue's writer task end
        with contextlib.suppress(LogFailed, Unavailable):
            await q.close()


async def _recover_and_check(files: dict[str, bytes], obs: Observed, rng: random.Random) -> SimDisk:
    disk = SimDisk(files)
    q = await QppValidatorQueue.open("v", DIR, layer=disk, compact_bytes=4096)
    items = {i.message_id: i for i in q._state.ready_items()}
    for mid, msg in obs.acked.items():
        if mid not in obs.consumed and mid not in obs.in_flight:
            assert mid in items, f"acknowledged sync submit {mid} lost"
            assert items[mid].message == msg
    assert not (set(items) & obs.consumed), "a consumed message came back"
    # ids recovered but never returned belong to sync submits cut by the crash
    obs.issued |= set(items)
    obs.consumed |= obs.in_flight - set(items)
    obs.in_flight.clear()
    new_id = await q.submit_sync(_msg(rng, 0), submitted_by="after")
    assert obs.issued == set() or new_id > max(obs.issued), "an id was reused"
    obs.issued.add(new_id)
    obs.acked[new_id] = (await _get(q, new_id)).message
    await q.close()
    return disk


async def _get(q: QppValidatorQueue, mid: int):  # type: ignore[no-untyped-def]
    return next(i for i in q._state.ready_items() if i.message_id == mid)


async def _run(seed: int, crash_at: int | None, steps: int) -> int:
    rng = random.Random(seed)
    obs = Observed()
    files: dict[str, bytes] = {}
    total_ops = 0
    for _round in range(2):  # crash, recover, keep working, crash again
        disk = SimDisk(files, crash_at=None if crash_at is None else crash_at)
        try:
            q = await QppValidatorQueue.open("v", DIR, layer=disk, compact_bytes=4096)
        except (LogFailed, Unavailable):
            files = disk.crash_image(rng)
            continue
        await _workload(q, rng, obs, steps)
        total_ops += disk.ops
        if not disk.crashed and crash_at is not None:
            # power cut after the workload ended (possibly before close finished)
            disk.crashed = True
        files = disk.crash_image(rng)
        disk = await _recover_and_check(files, obs, rng)
        files = {p: bytes(i.durable) for p, i in disk.names.items()}
    return total_ops


def _seeds() -> range:
    return range(80 if NIGHTLY else 14)


@pytest.mark.parametrize("seed", _seeds())
async def test_crash_at_every_point_keeps_acked_and_consumed(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small id blocks: reservations happen often, and async submits must wait for them
    monkeypatch.setattr("sidecar.queue.ID_BLOCK", 4 if seed % 2 else 1 << 20)
    steps = 40
    total = await _run(seed, None, steps)
    rng = random.Random(seed * 7919)
    # >= 1000 crash points over the whole parametrisation (14 seeds x 75)
    assert total >= 75, "workload too small for 75 distinct crash points"
    points = sorted(rng.sample(range(1, total + 1), 75))
    for k in points:
        await _run(seed * 1000 + k, k, steps)


def test_enough_crash_points_are_exercised() -> None:
    assert len(_seeds()) * 75 >= 1000
