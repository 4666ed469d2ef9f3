"""SIGHUP outside the ready state: while starting the reload waits until ready (no
READY=1 before the sidecar is); after STOPPING=1 it is ignored (no READY=1 again)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from sidecar.daemon.app import Sidecar
from sidecar.daemon.config import DaemonConfig, Endpoint
from sidecar.daemon.notify import SystemdNotifier
from tests.subprocesses import free_port

from .harness import NotifySocket


def _drain(ns: NotifySocket) -> list[str]:
    ns.sock.setblocking(False)
    got: list[str] = []
    try:
        while True:
            got.append(ns.sock.recv(65536).decode())
    except BlockingIOError:
        pass
    return got


def _sidecar(tmp_path: Path, ns: NotifySocket) -> Sidecar:
    cfg = DaemonConfig(
        data_dir=tmp_path / "d", metrics=None, listen=Endpoint("127.0.0.1", free_port())
    )
    return Sidecar(cfg, notifier=SystemdNotifier({"NOTIFY_SOCKET": str(ns.path)}))


async def _until_ready(sidecar: Sidecar, task: asyncio.Task[int]) -> None:
    for _ in range(600):  # bounded: 30 s
        if sidecar.ready or task.done():
            return
        await asyncio.sleep(0.05)


async def test_sighup_while_starting_is_done_once_ready_and_never_announces_ready_early(
    tmp_path: Path,
) -> None:
    ns = NotifySocket(tmp_path / "notify.sock")
    sidecar = _sidecar(tmp_path, ns)
    during_recovery: list[str] = []
    real_open = sidecar.queue.open

    async def open_with_a_sighup(**kw: object) -> str:
        os.kill(os.getpid(), signal.SIGHUP)  # `kill -HUP` while the log is recovered
        await asyncio.sleep(0.2)
        during_recovery.extend(_drain(ns))
        return await real_open(**kw)

    sidecar.queue.open = open_with_a_sighup  # type: ignore[method-assign]
    task = asyncio.create_task(sidecar.main())
    try:
        await _until_ready(sidecar, task)
        assert sidecar.ready
    finally:
        sidecar._stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    later = _drain(ns)
    ns.close()
    assert not any("READY=1" in m for m in during_recovery), during_recovery
    ready = next(i for i, m in enumerate(later) if "READY=1" in m)
    reloading = next(i for i, m in enumerate(later) if "RELOADING=1" in m)
    assert ready < reloading  # the deferred reload, after the sidecar said it was ready


async def test_sighup_while_stopping_is_ignored(tmp_path: Path) -> None:
    ns = NotifySocket(tmp_path / "notify.sock")
    sidecar = _sidecar(tmp_path, ns)
    real_stop = sidecar.peers.stop

    async def stop_with_a_sighup() -> None:
        os.kill(os.getpid(), signal.SIGHUP)  # `systemctl reload` during the shutdown
        await asyncio.sleep(0.2)
        await real_stop()

    sidecar.peers.stop = stop_with_a_sighup  # type: ignore[method-assign]
    task = asyncio.create_task(sidecar.main())
    await _until_ready(sidecar, task)
    assert sidecar.ready
    sidecar._stop.set()
    assert await asyncio.wait_for(task, 30) == 0
    got = _drain(ns)
    ns.close()
    stopping = next(i for i, m in enumerate(got) if "STOPPING=1" in m)
    after = got[stopping + 1 :]
    assert not any("READY=1" in m or "RELOADING=1" in m for m in after), after
