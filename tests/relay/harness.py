"""Sidecars relaying to each other: real ``qssh-sidecar serve`` processes on 127.0.0.1,
each with its own host key, an operator key, and a peer key per link."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

import transport.ssh_algorithms  # noqa: F401  (registers ssh-falcon512)
from tests.daemon.harness import Daemon
from tests.subprocesses import child_env, free_port
from transport.client import QueueClient
from transport.keys import known_hosts_line, public_line

KEY_ALG = "ssh-falcon512"


def _write_key(path: Path, key: asyncssh.SSHKey) -> Path:
    path.write_bytes(key.export_private_key())
    os.chmod(path, 0o600)
    return path


@dataclass
class Node:
    name: str
    root: Path
    port: int
    host_key: asyncssh.SSHKey
    operator: asyncssh.SSHKey
    daemon: Daemon | None = None
    extra_config: str = ""
    peers: list[str] = field(default_factory=list)
    metrics_port: int = 0

    def stderr_has(self, text: str) -> bool:
        return self.daemon is not None and any(text in line for line in self.daemon.errors)

    @property
    def config(self) -> Path:
        return self.root / "sidecar.toml"

    def start(self) -> Daemon:
        self.daemon = Daemon(["--config", str(self.config)], child_env(), self.root)
        self.daemon.wait_ready()
        return self.daemon

    def kill(self) -> None:
        if self.daemon is not None:
            self.daemon.kill()
            self.daemon = None

    def stop(self) -> int:
        assert self.daemon is not None
        rc = self.daemon.stop()
        self.daemon = None
        return rc

    def connect(self, **kwargs: Any) -> Any:
        return QueueClient.connect(
            "127.0.0.1",
            self.port,
            username="operator",
            client_keys=[self.operator],
            known_hosts=self.root / "known_hosts",
            **kwargs,
        )


def make_mesh(
    root: Path,
    names: Sequence[str],
    links: Sequence[tuple[str, str]] | None = None,
    *,
    config: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
    link_config: dict[tuple[str, str], str] | None = None,
    metrics: bool = False,
) -> dict[str, Node]:
    """Nodes named `names`; `links` (default: every ordered pair) are (from, to) relays.
    `config` adds TOML tables per node; `ports` overrides where a node's peers reach it
    (a proxy in front of it); `link_config` adds sub-tables to one link's [[peers]]."""
    links = links or [(a, b) for a in names for b in names if a != b]
    nodes: dict[str, Node] = {}
    for name in names:
        d = root / name
        d.mkdir()
        nodes[name] = Node(
            name,
            d,
            free_port(),
            asyncssh.generate_private_key(KEY_ALG),
            asyncssh.generate_private_key(KEY_ALG),
            extra_config=(config or {}).get(name, ""),
            metrics_port=free_port() if metrics else 0,
        )
    peer_keys = {link: asyncssh.generate_private_key(KEY_ALG) for link in links}
    for name, node in nodes.items():
        d = node.root
        _write_key(d / "host_key", node.host_key)
        (d / "known_hosts").write_text(known_hosts_line("127.0.0.1", node.port, node.host_key))
        lines = [f'roles="producer,consumer,admin" {public_line(node.operator)} operator']
        lines += [
            f'roles="peer" {public_line(key)} {src}'
            for (src, dst), key in peer_keys.items()
            if dst == name
        ]
        (d / "authorized_keys").write_text("\n".join(lines) + "\n")
        toml = [
            f'instance = "{name}"',
            'data_dir = "data"',
            f'listen = "127.0.0.1:{node.port}"',
            'host_key = "host_key"',
            'authorized_keys = "authorized_keys"',
            node.extra_config,
            "[metrics]",
            f'listen = "127.0.0.1:{node.metrics_port}"' if node.metrics_port else 'listen = ""',
        ]
        for (src, dst), key in peer_keys.items():
            if src != name:
                continue
            target = nodes[dst]
            port = (ports or {}).get(dst, target.port)
            identity = _write_key(d / f"to_{dst}", key)
            pin = known_hosts_line("127.0.0.1", port, target.host_key)
            toml += [
                "[[peers]]",
                f'name = "{dst}"',
                f'address = "127.0.0.1:{port}"',
                f'host_key = "{pin}"',
                f'identity = "{identity.name}"',
                (link_config or {}).get((src, dst), ""),
            ]
            node.peers.append(dst)
        node.config.write_text("\n".join(toml) + "\n")
    return nodes


@pytest.fixture
def mesh_nodes() -> Iterator[list[Node]]:
    """Nodes a test starts; every one still running is killed afterwards."""
    started: list[Node] = []
    yield started
    for node in started:
        node.kill()


def block(number: int) -> dict[str, Any]:
    return {
        "kind": "block_import",
        "block_hash": f"{number:064x}",
        "block_number": number,
        "timestamp": 1_700_000_000 + number,
    }


async def pop_all(node: Node) -> list[dict[str, Any]]:
    out = []
    async with node.connect() as client:
        while (item := await client.pop()) is not None:
            out.append(item)
    return out
