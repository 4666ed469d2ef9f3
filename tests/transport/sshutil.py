"""A tiny asyncssh server on 127.0.0.1 for transport tests (the queue service comes later)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncssh

from transport.keys import parse_authorized_keys
from transport.ssh_algorithms import under_every_name
from transport.ssh_options import ssh_options_for_tier


async def _echo_command(process: asyncssh.SSHServerProcess[str]) -> None:
    process.stdout.write(f"ran {process.command}\n")
    process.exit(0)


class _Server(asyncssh.SSHServer):
    def __init__(self, connections: list[asyncssh.SSHServerConnection]) -> None:
        self.connections = connections

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.connections.append(conn)


@dataclass
class RunningServer:
    port: int
    host_key: asyncssh.SSHKey
    connections: list[asyncssh.SSHServerConnection]
    """Server ends of the connections accepted so far."""

    def known_hosts(self, key: asyncssh.SSHKey | None = None) -> asyncssh.SSHKnownHosts:
        key = key or self.host_key
        line = f"[127.0.0.1]:{self.port} {key.export_public_key().decode()}"
        return asyncssh.import_known_hosts(line)


@asynccontextmanager
async def pq_server(
    host_key: asyncssh.SSHKey,
    client_keys: Sequence[asyncssh.SSHKey],
    *,
    tier: int = 2,
    kex_algs: Sequence[str] | None = None,
) -> AsyncIterator[RunningServer]:
    options = ssh_options_for_tier(tier, "server")
    if kex_algs is not None:
        options["kex_algs"] = list(kex_algs)
    authorized = parse_authorized_keys(
        "".join(k.export_public_key().decode() for k in client_keys), require_pq=False
    )
    connections: list[asyncssh.SSHServerConnection] = []
    server = await asyncssh.create_server(
        lambda: _Server(connections),
        "127.0.0.1",
        0,
        server_host_keys=under_every_name([host_key]),  # as transport.server presents them
        authorized_client_keys=authorized,
        process_factory=_echo_command,
        **options,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield RunningServer(port, host_key, connections)
    finally:
        server.close()
        await server.wait_closed()


def client_options(
    server: RunningServer,
    client_key: asyncssh.SSHKey,
    *,
    tier: int = 2,
    kex_algs: Sequence[str] | None = None,
    known_hosts: asyncssh.SSHKnownHosts | None = None,
) -> dict[str, object]:
    options = ssh_options_for_tier(tier, "client")
    if kex_algs is not None:
        options["kex_algs"] = list(kex_algs)
    options.update(
        host="127.0.0.1",
        port=server.port,
        username="validator",
        client_keys=[client_key],
        known_hosts=known_hosts if known_hosts is not None else server.known_hosts(),
        agent_path=None,
        config=(),
    )
    return options


async def run_command(options: dict[str, object], command: str = "ping") -> str:
    async with asyncssh.connect(**options) as conn:
        result = await conn.run(command, check=True)
        return str(result.stdout)
