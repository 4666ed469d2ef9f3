"""Retried sync submits with a ``dedup_id`` across SIGKILLs of the real daemon.

Each cycle starts ``qssh-sidecar serve``, retries every submit whose reply the last
kill cut off (same ``dedup_id``), re-sends a few acknowledged ones, starts a window
of new ones and SIGKILLs the daemon under them. At the end every number is in the
queue exactly once, under the id its first acknowledged reply named.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from pathlib import Path
from typing import Any

from tests.service.conftest import Keys, authorized_keys_text, block_import, pin_host_key
from tests.service.test_sigkill import start_serve
from tests.subprocesses import free_port
from transport.client import QueueClient

CYCLES = 20 if os.environ.get("QSSH_NIGHTLY") == "1" else 4
WINDOW = 24


def _dedup_id(number: int) -> str:
    return f"block-{number}"


async def _connect(port: int, key: Path, known_hosts: Path) -> Any:
    return QueueClient.connect("127.0.0.1", port, client_keys=[str(key)], known_hosts=known_hosts)


async def test_a_retried_sync_submit_is_stored_once_across_daemon_kills(
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

    rng = random.Random(15)
    acked: dict[int, int] = {}  # number -> message id of its acknowledged submit
    unanswered: set[int] = set()  # sent, reply cut off by a kill
    duplicates = 0
    next_number = 1

    async def submit(client: Any, number: int) -> None:
        nonlocal duplicates
        reply = await client.submit(block_import(number), "sync", dedup_id=_dedup_id(number))
        if number in acked:
            assert reply["duplicate"] is True
            assert reply["message_id"] == acked[number]
        acked.setdefault(number, reply["message_id"])
        duplicates += bool(reply["duplicate"])
        unanswered.discard(number)

    stored: dict[int, list[int]] = {}
    for cycle in range(CYCLES + 1):
        server = await start_serve(tmp_path, port)
        try:
            async with await _connect(port, key_file, known_hosts) as client:
                for number in sorted(unanswered):
                    await submit(client, number)
                for number in rng.sample(sorted(acked), min(3, len(acked))):
                    await submit(client, number)
                if cycle == CYCLES:
                    while (item := await client.pop()) is not None:
                        number = item["message"]["block_number"]
                        stored.setdefault(number, []).append(item["message_id"])
                    break
                fresh = list(range(next_number, next_number + WINDOW))
                next_number += WINDOW
                unanswered.update(fresh)
                tasks = [asyncio.ensure_future(submit(client, n)) for n in fresh]
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                server.send_signal(signal.SIGKILL)
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            with contextlib.suppress(ProcessLookupError):
                server.kill()
            await server.wait()

    assert not unanswered
    assert stored == {number: [mid] for number, mid in acked.items()}
    assert duplicates > 0  # the retries did meet stored keys
