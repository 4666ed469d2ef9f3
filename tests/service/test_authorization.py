"""Who gets in and what each role may do; host key pinning; classical clients refused."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncssh
import orjson
import pytest

from sidecar.errors import Forbidden
from tests.service.conftest import Service, pin_host_key, telemetry
from transport.client import AuthRefused, ConnectFailed
from transport.crypto import available_kex
from transport.host_pinning import HostKeyError
from transport.server import NEGOTIATION
from transport.ssh_options import ssh_options_for_tier


async def test_producer_cannot_pop_and_error_says_forbidden(service: Service) -> None:
    async with service.connect(service.keys.producer) as client:
        await client.submit(telemetry(), "sync")
        with pytest.raises(Forbidden, match="consumer role"):
            await client.pop()
        with pytest.raises(Forbidden):
            await client.subscribe()
    async with service.connect() as client:
        assert await client.depth() == 1


async def test_consumer_cannot_submit(service: Service) -> None:
    async with service.connect(service.keys.consumer) as client:
        with pytest.raises(Forbidden, match="producer role"):
            await client.submit(telemetry())
        assert await client.depth() == 0


async def test_stats_and_tier_need_admin(service: Service) -> None:
    async with service.connect(service.keys.consumer) as client:
        with pytest.raises(Forbidden):
            await client.stats()
        with pytest.raises(Forbidden):
            await client.tier()
        assert (await client.ping())["roles"] == ["consumer"]


async def test_unknown_key_is_refused(service: Service) -> None:
    with pytest.raises(AuthRefused):
        await service.connect(service.keys.unknown)


async def test_revoked_key_is_refused_without_restart(service: Service, tmp_path: Path) -> None:
    ak = tmp_path / "authorized_keys"
    lines = [ln for ln in ak.read_text().splitlines() if not ln.endswith(" producer")]
    ak.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuthRefused):
        await service.connect(service.keys.producer)


async def test_a_classical_user_key_is_refused_even_when_listed(
    service: Service, tmp_path: Path
) -> None:
    classical = asyncssh.generate_private_key("ssh-ed25519")
    public = classical.export_public_key().decode().split()
    with (tmp_path / "authorized_keys").open("a") as f:
        f.write(f'roles="producer,consumer,admin" {public[0]} {public[1]} classical\n')
    # the client is willing to sign with it: the refusal must come from the server
    offered = [*ssh_options_for_tier(2, "client")["signature_algs"], "ssh-ed25519"]
    with pytest.raises(AuthRefused):
        await service.connect(classical, ssh_options={"signature_algs": offered})


async def test_classical_only_asyncssh_client_is_refused(service: Service) -> None:
    with pytest.raises(ConnectFailed):
        await service.connect(ssh_options={"kex_algs": ["curve25519-sha256"]})


def _openssh_shares_a_kex_with_us() -> bool:
    supported = subprocess.run(
        ["ssh", "-Q", "kex"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    return bool(set(supported) & set(available_kex()))


async def test_stock_openssh_client_is_refused_in_the_handshake(service: Service) -> None:
    """Without a shared hybrid KEX (OpenSSH 9.2, no liboqs) the refusal is the key
    exchange; with liboqs we offer sntrup761x25519-sha512@openssh.com, which OpenSSH has
    had since 8.5, and the refusal moves to the host key: stock OpenSSH has no
    post-quantum host key algorithm."""
    expected = (
        b"no matching host key type found"
        if _openssh_shares_a_kex_with_us()
        else b"no matching key exchange method found"
    )
    proc = await asyncio.create_subprocess_exec(
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        str(service.port),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=20",
        "127.0.0.1",
        "stats",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 255
    assert stdout == b""
    assert expected in stderr, stderr
    # the daemon log names it (tests/service/test_negotiation_log.py checks the line)
    for _ in range(200):
        if service.server.refused_by_reason[NEGOTIATION]:
            break
        await asyncio.sleep(0.05)
    assert service.server.refused_by_reason[NEGOTIATION] == 1


async def test_changed_host_key_is_refused_with_clear_message(
    service: Service, tmp_path: Path
) -> None:
    other = asyncssh.generate_private_key("ssh-falcon512")
    known = tmp_path / "changed_known_hosts"
    pin_host_key(known, service.port, other)
    with pytest.raises(HostKeyError, match="HAS CHANGED") as info:
        await service.connect(known_hosts=known, strict_host_key_checking="accept-new")
    assert service.keys.host.get_fingerprint("sha256") in str(info.value)
    assert known.read_text().count("\n") == 1  # nothing appended


async def test_unknown_host_refused_when_strict(service: Service, tmp_path: Path) -> None:
    with pytest.raises(HostKeyError, match="StrictHostKeyChecking=yes"):
        await service.connect(known_hosts=tmp_path / "empty_known_hosts")


async def test_accept_new_pins_first_key_then_it_is_trusted(
    service: Service, tmp_path: Path
) -> None:
    known = tmp_path / "new_known_hosts"
    async with service.connect(known_hosts=known, strict_host_key_checking="accept-new") as c:
        await c.ping()
    line = known.read_text()
    assert line.startswith(f"[127.0.0.1]:{service.port} ssh-falcon512 ")
    async with service.connect(known_hosts=known, strict_host_key_checking="yes") as c:
        await c.ping()


def _exec_options(service: Service, key: asyncssh.SSHKey) -> dict[str, object]:
    options = ssh_options_for_tier(2, "client")
    options.update(
        username="",
        client_keys=[key],
        known_hosts=str(service.known_hosts),
        agent_path=None,
        config=(),
    )
    return options


async def test_one_shot_exec_commands_answer_json(service: Service) -> None:
    async with service.connect() as client:
        await client.submit(telemetry(), "sync")
    options = _exec_options(service, service.keys.admin)
    async with asyncssh.connect("127.0.0.1", service.port, **options) as conn:  # type: ignore[arg-type]
        depth = await conn.run("depth", check=True)
        assert orjson.loads(depth.stdout)["total"] == 1
        tier = await conn.run("tier", check=True)
        assert orjson.loads(tier.stdout)["tier"] == 2
        stats = await conn.run("stats", check=True)
        assert orjson.loads(stats.stdout)["depth"]["total"] == 1
        shell = await conn.run("rm -rf /")
        assert shell.exit_status == 127
        assert orjson.loads(shell.stderr)["error"]["code"] == "bad_request"


async def test_exec_stats_needs_admin(service: Service) -> None:
    options = _exec_options(service, service.keys.consumer)
    async with asyncssh.connect("127.0.0.1", service.port, **options) as conn:  # type: ignore[arg-type]
        result = await conn.run("stats")
        assert result.exit_status == 1
        assert orjson.loads(result.stderr)["error"]["code"] == "forbidden"
