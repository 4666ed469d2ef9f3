"""The library server presents post-quantum host keys only: a classical key given to
``start_queue_server`` (loaded, or by path) is refused at start, so no client can get
a session authenticated by it (the daemon's keys.py refuses them at load already)."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from sidecar import QppValidatorQueue
from tests.service.conftest import Keys, authorized_keys_text
from transport.server import ServerSettings, start_queue_server


@pytest.mark.parametrize("by_path", [False, True])
async def test_a_classical_host_key_is_refused_at_start(
    tmp_path: Path, keys: Keys, by_path: bool
) -> None:
    ak = tmp_path / "authorized_keys"
    ak.write_text(authorized_keys_text(keys))
    classical = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / "ed25519_host_key"
    classical.write_private_key(path)
    settings = (
        ServerSettings(host_keys=(keys.host,), host_key_paths=(path,), authorized_keys_path=ak)
        if by_path
        else ServerSettings(host_keys=(keys.host, classical), authorized_keys_path=ak)
    )
    queue = await QppValidatorQueue.open("alice", tmp_path / "data")

    async def start_and_close() -> None:  # closes what a server without the check starts
        server = await start_queue_server(queue, settings)
        await server.close()

    try:
        with pytest.raises(ValueError, match=r"is a ssh-ed25519 key; .* host keys only") as err:
            await start_and_close()
        source = str(path) if by_path else "host key 2"
        assert source in str(err.value)
    finally:
        await queue.close()
