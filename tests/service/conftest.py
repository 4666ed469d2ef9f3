"""A real queue behind a real queue server on 127.0.0.1, and keys with roles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

import transport.ssh_algorithms  # noqa: F401  (registers ssh-falcon512)
from sidecar import QppValidatorQueue
from tests.event_loops import loop_factories as pytest_asyncio_loop_factories  # noqa: F401
from transport.client import QueueClient
from transport.keys import known_hosts_line
from transport.limits import ServiceLimits
from transport.server import QueueServer, ServerSettings, start_queue_server

KEY_ALG = "ssh-falcon512"


@dataclass(frozen=True)
class Keys:
    host: asyncssh.SSHKey
    producer: asyncssh.SSHKey
    consumer: asyncssh.SSHKey
    admin: asyncssh.SSHKey
    everything: asyncssh.SSHKey
    unknown: asyncssh.SSHKey


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(*(asyncssh.generate_private_key(KEY_ALG) for _ in range(6)))


def authorized_keys_text(keys: Keys) -> str:
    def line(roles: str, key: asyncssh.SSHKey, name: str) -> str:
        public = key.export_public_key().decode().split()
        return f'roles="{roles}" {public[0]} {public[1]} {name}\n'

    return (
        "# test service keys\n"
        + line("producer", keys.producer, "producer")
        + line("consumer", keys.consumer, "consumer")
        + line("admin", keys.admin, "admin")
        + line("producer,consumer,admin", keys.everything, "everything")
    )


@dataclass
class Service:
    server: QueueServer
    queue: Any
    data_dir: Path
    known_hosts: Path
    keys: Keys

    @property
    def port(self) -> int:
        return self.server.port

    def connect(self, key: asyncssh.SSHKey | None = None, **kwargs: Any) -> Any:
        return QueueClient.connect(
            "127.0.0.1",
            self.port,
            username=kwargs.pop("username", None),
            client_keys=[key or self.keys.everything],
            known_hosts=kwargs.pop("known_hosts", self.known_hosts),
            **kwargs,
        )


def pin_host_key(path: Path, port: int, key: asyncssh.SSHKey) -> None:
    path.write_text(known_hosts_line("127.0.0.1", port, key) + "\n")


async def start_service(
    tmp_path: Path,
    keys: Keys,
    limits: ServiceLimits | None = None,
    tier: int = 2,
    **settings: Any,
) -> Service:
    """A queue in ``tmp_path/data`` served on a free port; ``settings`` go to
    ``ServerSettings`` (a tier provider, a policy, QKD settings)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    ak = tmp_path / "authorized_keys"
    ak.write_text(authorized_keys_text(keys))
    queue = await QppValidatorQueue.open("alice", data_dir)
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        host_keys=(keys.host,),
        authorized_keys_path=ak,
        limits=limits or ServiceLimits(),
        tier=tier,
        **settings,
    )
    server = await start_queue_server(queue, settings)
    known_hosts = tmp_path / "known_hosts"
    pin_host_key(known_hosts, server.port, keys.host)
    return Service(server, queue, data_dir, known_hosts, keys)


async def stop_service(service: Service) -> None:
    await service.server.close()
    await service.queue.close()


@pytest.fixture
async def service(tmp_path: Path, keys: Keys) -> AsyncIterator[Service]:
    svc = await start_service(tmp_path, keys)
    try:
        yield svc
    finally:
        await stop_service(svc)


def telemetry(value: float = 1.0, name: str = "cpu") -> dict[str, Any]:
    return {"kind": "telemetry", "name": name, "value": value}


def block_import(number: int) -> dict[str, Any]:
    return {
        "kind": "block_import",
        "block_hash": f"{number:064x}",
        "block_number": number,
        "timestamp": 1_700_000_000 + number,
    }


def gossip(n: int) -> dict[str, Any]:
    return {"kind": "gossip", "topic": f"t{n}", "data": "aGVsbG8="}
