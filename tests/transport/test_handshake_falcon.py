"""Real asyncssh connections on 127.0.0.1 with Falcon-512 host and user keys."""

from __future__ import annotations

import asyncssh
import pytest

from tests.transport.sshutil import client_options, pq_server
from transport import ssh_algorithms
from transport.crypto import available_kex

assert "ssh-falcon512" in ssh_algorithms.registered_algorithms()


@pytest.fixture(scope="module")
def falcon_keys() -> tuple[asyncssh.SSHKey, asyncssh.SSHKey]:
    return (
        asyncssh.generate_private_key("ssh-falcon512"),
        asyncssh.generate_private_key("ssh-falcon512"),
    )


@pytest.mark.parametrize("kex", available_kex())
async def test_falcon512_host_and_user_key_connect_with_each_hybrid_kex(
    falcon_keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey], kex: str
) -> None:
    # The client offers only ``kex``, so a completed connection used it.
    host_key, user_key = falcon_keys
    async with pq_server(host_key, [user_key]) as server:
        options = client_options(server, user_key, kex_algs=[kex])
        async with asyncssh.connect(**options) as conn:
            result = await conn.run("ping", check=True)
            assert result.stdout == "ran ping\n"
            server_key = conn.get_server_host_key()
            assert server_key is not None
            assert server_key.get_algorithm() == "ssh-falcon512"
