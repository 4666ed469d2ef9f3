"""SIGKILL of the real ``qssh-sidecar serve`` under load from several client processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import asyncssh

from sidecar import QppValidatorQueue
from tests.service.conftest import Keys, authorized_keys_text, pin_host_key
from tests.subprocesses import REPO, START_TIMEOUT, child_env, free_port


async def wait_listening(port: int, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.returncode is None, "serve exited early"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise AssertionError("serve did not listen within 60 s")


async def start_serve(tmp_path: Path, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar.cli",
        "serve",
        "--instance",
        "alice",
        "--data-dir",
        str(tmp_path / "data"),
        "--listen",
        f"127.0.0.1:{port}",
        "--host-key",
        str(tmp_path / "host_key"),
        "--authorized-keys",
        str(tmp_path / "authorized_keys"),
        "--metrics",
        "",
        cwd=tmp_path,
        env=child_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_listening(port, proc)
    return proc


async def start_client(
    port: int, key: Path, known_hosts: Path, role: str, tag: int
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.service.load_client",
        str(port),
        str(key),
        str(known_hosts),
        role,
        str(tag),
        cwd=REPO,
        env=child_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line == b"READY\n", line
    return proc


async def collect(proc: asyncio.subprocess.Process, into: dict[bytes, set[int]]) -> None:
    """Sort the client's ``WORD id`` lines into ``into[WORD]``."""
    assert proc.stdout is not None
    while True:
        line = await proc.stdout.readline()
        if not line:
            return
        word, _, rest = line.partition(b" ")
        if word in into:
            into[word].add(int(rest))


async def test_sigkill_under_load_keeps_every_acked_submit_and_no_consumed_one(
    tmp_path: Path, keys: Keys
) -> None:
    (tmp_path / "authorized_keys").write_text(authorized_keys_text(keys))
    (tmp_path / "host_key").write_bytes(keys.host.export_private_key())
    os.chmod(tmp_path / "host_key", 0o600)
    key_file = tmp_path / "client_key"
    key_file.write_bytes(keys.everything.export_private_key())
    os.chmod(key_file, 0o600)
    port = free_port()
    known_hosts = tmp_path / "known_hosts"
    pin_host_key(known_hosts, port, keys.host)

    server = await start_serve(tmp_path, port)
    acked: set[int] = set()
    consumed: set[int] = set()
    leased: set[int] = set()
    clients = []
    readers = []
    try:
        for tag in range(3):
            proc = await start_client(port, key_file, known_hosts, "producer", tag)
            clients.append(proc)
            readers.append(asyncio.ensure_future(collect(proc, {b"ACK": acked})))
        proc = await start_client(port, key_file, known_hosts, "consumer", 9)
        clients.append(proc)
        sink = {b"CONSUMED": consumed, b"LEASED": leased}
        readers.append(asyncio.ensure_future(collect(proc, sink)))
        deadline = time.monotonic() + 60
        while (len(acked) < 300 or len(consumed) < 20) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(acked) >= 300, "load did not get going"
        server.send_signal(signal.SIGKILL)
        await server.wait()
        await asyncio.wait_for(asyncio.gather(*readers), 60)
        for proc in clients:
            await asyncio.wait_for(proc.wait(), 60)
    finally:
        for proc in [server, *clients]:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    assert consumed, "the consumer never consumed anything"
    # the daemon keeps its log under <data-dir>/queue
    queue = await QppValidatorQueue.open("alice", tmp_path / "data" / "queue")
    present: set[int] = set()
    try:
        for _ in range(len(acked) + 10):
            handle = await queue.pop()
            if handle is None:
                break
            present.add(handle.consume().message_id)
    finally:
        await queue.close()
    assert consumed <= acked
    assert present.isdisjoint(consumed), "an acked-consumed message came back"
    # An ack in flight at the kill may have been logged without its reply arriving:
    # only the lease the consumer was acking may be gone without a CONSUMED line.
    missing = acked - consumed - present
    assert missing <= leased - consumed, f"{len(missing)} of {len(acked)} acked submits lost"
    assert len(missing) <= 1
    assert present, "nothing left to check after restart"


_ = asyncssh  # keys are asyncssh keys (registered through conftest)
