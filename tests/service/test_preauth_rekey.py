"""Before authentication a client gets one key exchange: a second KEXINIT closes the
connection (each one made the server sign with its host key, for nothing)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.service.conftest import Keys, Service, start_service, stop_service
from tests.service.test_admission_live import ROOMY
from transport.admission import AdmissionLimits, Penalties
from transport.limits import ServiceLimits
from transport.ssh_algorithms import PQSSHKey
from transport.ssh_options import ssh_options_for_tier


def count_host_signatures(monkeypatch: pytest.MonkeyPatch, host: asyncssh.SSHKey) -> list[int]:
    signed = [0]
    real = PQSSHKey.sign_ssh

    def counting(self: PQSSHKey, *args: Any) -> bytes:
        signed[0] += self.public_data == host.public_data
        return real(self, *args)

    monkeypatch.setattr(PQSSHKey, "sign_ssh", counting)
    return signed


def kex_idle(conn: Any) -> bool:
    """The client's key exchange is done and it has not started another one."""
    return bool(conn._kex_complete) and conn._kex is None and not conn._kexinit_sent


async def rekey(conn: Any) -> None:
    """Start a key exchange from the client, once the previous one is over."""
    for _ in range(200):
        if kex_idle(conn) or conn.is_closed():
            break
        await asyncio.sleep(0.01)
    if not conn.is_closed():
        conn._send_kexinit()
        conn._kexinit_sent = True


async def start(tmp_path: Path, keys: Keys) -> Service:
    admission = AdmissionLimits(max_startups=ROOMY, penalties=Penalties(enabled=False))
    return await start_service(tmp_path, keys, ServiceLimits(admission=admission))


async def test_a_second_key_exchange_before_authentication_closes_the_connection(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = count_host_signatures(monkeypatch, keys.host)
    svc = await start(tmp_path, keys)
    holder: list[asyncssh.SSHClientConnection] = []
    stalled = asyncio.Event()

    class Stall(asyncssh.SSHClient):
        def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
            holder.append(conn)

        async def public_key_auth_requested(self) -> None:
            stalled.set()
            await asyncio.sleep(30)  # never offers a key

    task = asyncio.ensure_future(
        asyncssh.create_connection(
            Stall, "127.0.0.1", svc.port, username="qssh", client_keys=None,
            known_hosts=None, local_addr=("127.0.5.1", 0), agent_path=None,
            **ssh_options_for_tier(2, "client"),
        )
    )  # fmt: skip
    try:
        await asyncio.wait_for(stalled.wait(), 10)
        conn = holder[0]
        for _ in range(5):
            await rekey(conn)
        await asyncio.wait_for(conn.wait_closed(), 10)
        for _ in range(100):
            if svc.server.admission.unauthenticated == 0:
                break
            await asyncio.sleep(0.02)
        assert signed[0] == 1, f"the server signed {signed[0]} key exchanges before auth"
        assert svc.server.refused_by_reason["rekey"] == 1
        assert svc.server.admission.unauthenticated == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await stop_service(svc)


async def test_key_exchanges_after_authentication_are_unchanged(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = count_host_signatures(monkeypatch, keys.host)
    svc = await start(tmp_path, keys)
    try:
        async with asyncssh.connect(
            "127.0.0.1", svc.port, username="qssh", client_keys=[keys.everything],
            known_hosts=None, agent_path=None, **ssh_options_for_tier(2, "client"),
        ) as conn:  # fmt: skip
            for _ in range(2):
                await rekey(conn)
                await conn.run("depth", check=True)
        assert signed[0] == 3
        assert "rekey" not in svc.server.refused_by_reason
    finally:
        await stop_service(svc)
