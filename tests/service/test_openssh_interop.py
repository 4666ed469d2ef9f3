"""An OpenSSH-family client with post-quantum algorithms against the queue service.

Runs where such a client is found: ``$QSSH_OQS_SSH`` (e.g. an OQS-OpenSSH build's
``ssh``; its ``ssh-keygen`` is taken from the same directory, or ``$QSSH_OQS_SSH_KEYGEN``),
else an ``ssh`` on PATH that lists a post-quantum key algorithm we accept. It needs a key
exchange in common too: OpenSSH has ``sntrup761x25519-sha512@openssh.com`` since 8.5 and
we offer it only with liboqs (docs/crypto.md). Otherwise every test here skips, saying
why. What was tried by hand, and with what result: docs/crypto.md, "Interoperability".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.service.conftest import Keys, Service, gossip, start_service, stop_service
from transport.crypto import available_kex
from transport.keys import (
    fingerprint,
    generate_key,
    known_hosts_line,
    read_authorized_keys,
    read_public_key,
    write_key_pair,
)
from transport.protocol import HEADER, FrameDecoder
from transport.ssh_algorithms import accepted_algorithms, canonical_name

PREFERRED = ("ssh-falcon512", "ssh-mldsa-44", "ssh-mldsa44", "ssh-mldsa-65", "ssh-mldsa65")
TIMEOUT = 60


@dataclass(frozen=True)
class Client:
    ssh: str
    keygen: str
    version: str
    key_alg: str
    """The post-quantum key algorithm, as the client names it."""
    kex: str
    cipher: str


def _query(ssh: str, what: str) -> list[str]:
    result = subprocess.run(
        [ssh, "-Q", what], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    return result.stdout.split() if result.returncode == 0 else []


@functools.cache
def find_client() -> Client | str:
    """The client to test, or why there is none."""
    configured = os.environ.get("QSSH_OQS_SSH")
    candidates = [configured] if configured else [shutil.which("ssh")]
    ssh = candidates[0]
    if not ssh:
        return "no ssh client on PATH; set QSSH_OQS_SSH=/path/to/an OQS-OpenSSH ssh"
    if not os.access(ssh, os.X_OK):
        return f"QSSH_OQS_SSH={ssh} is not an executable"
    version = subprocess.run(
        [ssh, "-V"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    ).stderr.strip()
    keys = _query(ssh, "key")
    ours = accepted_algorithms()
    shared_keys = [k for k in PREFERRED if k in keys and k in ours] or [
        k for k in keys if k in ours
    ]
    if not shared_keys:
        return (
            f"{ssh} ({version}) has no post-quantum key algorithm we accept "
            "(ssh-falcon512, ssh-mldsa-44, ...); set QSSH_OQS_SSH=/path/to/an OQS-OpenSSH ssh"
        )
    kex = [k for k in _query(ssh, "kex") if k in available_kex()]
    if not kex:
        return (
            f"{ssh} ({version}) shares no key exchange with us ({', '.join(available_kex())})"
            "; sntrup761 needs liboqs here (docs/crypto.md)"
        )
    ciphers = [c for c in ("aes256-gcm@openssh.com",) if c in _query(ssh, "cipher")]
    if not ciphers:
        return f"{ssh} ({version}) lacks aes256-gcm@openssh.com (built without OpenSSL?)"
    keygen = os.environ.get("QSSH_OQS_SSH_KEYGEN") or str(Path(ssh).with_name("ssh-keygen"))
    if not os.access(keygen, os.X_OK):
        return f"no ssh-keygen beside {ssh}; set QSSH_OQS_SSH_KEYGEN"
    return Client(ssh, keygen, version, shared_keys[0], kex[0], ciphers[0])


def _client() -> Client:
    found = find_client()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@dataclass
class Setup:
    client: Client
    service: Service
    identity: Path
    known_hosts: Path


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    client = _client()
    alg = canonical_name(client.key_alg)
    ours = Keys(*(generate_key(alg) for _ in range(6)))
    service = await start_service(tmp_path, ours)
    try:
        # the operator's key, written by us, used by their client
        identity, _ = write_key_pair(ours.everything.renamed(client.key_alg), tmp_path / "id")
        known_hosts = tmp_path / "openssh_known_hosts"
        host = ours.host.renamed(client.key_alg)
        known_hosts.write_text(known_hosts_line("127.0.0.1", service.port, host) + "\n")
        yield Setup(client, service, identity, known_hosts)
    finally:
        await stop_service(service)


def _ssh(
    s: Setup, *args: str, identity: Path | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    c = s.client
    command = [
        c.ssh, "-F", "/dev/null", "-p", str(s.service.port),
        "-i", str(identity or s.identity), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={s.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", f"KexAlgorithms={c.kex}",
        "-o", f"HostKeyAlgorithms={c.key_alg}", "-o", f"PubkeyAcceptedKeyTypes={c.key_alg}",
        "-o", f"Ciphers={c.cipher}", "-o", "ConnectTimeout=30",
        *args,
    ]  # fmt: skip
    return subprocess.run(command, input=stdin, capture_output=True, timeout=TIMEOUT, check=False)


@pytest.mark.parametrize("command", ["depth", "stats", "tier"])
async def test_one_shot_commands(setup: Setup, command: str) -> None:
    result = await asyncio.to_thread(_ssh, setup, "qssh@127.0.0.1", command)
    assert result.returncode == 0, result.stderr.decode()
    answer = orjson.loads(result.stdout)
    assert isinstance(answer, dict)
    if command == "tier":
        assert answer["session"]["host_key"] == canonical_name(setup.client.key_alg)


async def test_the_subsystem_from_stdin_ends_with_exit_status_0(setup: Setup) -> None:
    requests = [
        {"id": 1, "method": "ping"},
        {"id": 2, "method": "submit", "params": {"message": gossip(7), "mode": "sync"}},
        {"id": 3, "method": "pop"},
    ]
    stdin = b"".join(HEADER.pack(len(b)) + b for b in map(orjson.dumps, requests))
    result = await asyncio.to_thread(_ssh, setup, "-s", "qssh@127.0.0.1", "qssh-queue", stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    replies = {r["id"]: r for r in map(orjson.loads, FrameDecoder(1 << 20).feed(result.stdout))}
    assert replies[1]["result"]["pong"] is True
    assert replies[2]["result"]["persisted"] is True
    # pop may overtake the submit's group commit: either it found the message or null
    assert "result" in replies[3]


async def test_their_key_in_our_authorized_keys_and_fingerprints_agree(
    setup: Setup, tmp_path: Path
) -> None:
    theirs = tmp_path / "their_id"
    subprocess.run(
        [setup.client.keygen, "-q", "-t", setup.client.key_alg, "-N", "", "-f", str(theirs)],
        check=True, capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    public = read_public_key(f"{theirs}.pub")
    listed = subprocess.run(
        [setup.client.keygen, "-l", "-E", "sha256", "-f", f"{theirs}.pub"],
        check=True, capture_output=True, text=True, timeout=TIMEOUT,
    ).stdout.split()  # fmt: skip
    assert fingerprint(public) in listed
    with (tmp_path / "authorized_keys").open("a") as f:
        f.write(f'roles="admin" {Path(f"{theirs}.pub").read_text().strip()}\n')
    result = await asyncio.to_thread(_ssh, setup, "qssh@127.0.0.1", "stats", identity=theirs)
    assert result.returncode == 0, result.stderr.decode()


def test_their_key_of_an_algorithm_we_lack_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client()
    lacking = [k for k in _query(client.ssh, "key") if k in ("ssh-dilithium3", "ssh-dilithium2")]
    if not lacking:
        pytest.skip(f"{client.version} has no Dilithium round-3 key type to try")
    theirs = tmp_path / "their_dilithium"
    subprocess.run(
        [client.keygen, "-q", "-t", lacking[0], "-N", "", "-f", str(theirs)],
        check=True, capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    ours = generate_key("ssh-falcon512")
    path = tmp_path / "authorized_keys"
    path.write_text(f"{Path(f'{theirs}.pub').read_text()}{ours.export_public_key().decode()}")
    with caplog.at_level(logging.WARNING):
        authorized = read_authorized_keys(path)
    assert authorized.validate(ours.convert_to_public(), "127.0.0.1", "127.0.0.1") is not None
    assert any(
        f"key algorithm {lacking[0]} is not supported here" in r.getMessage()
        for r in caplog.records
    )
