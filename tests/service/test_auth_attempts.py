"""Authentication attempts of a connection: a forged signature on an authorized public
key is a failed authentication (charged and logged), and one connection may try at
most ``max_auth_tries`` keys (OpenSSH's MaxAuthTries)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.service.conftest import Keys, Service, start_service, stop_service
from tests.service.test_admission_live import ROOMY, connect_from
from transport.admission import AdmissionLimits, Penalties
from transport.client import AuthRefused, QueueClient
from transport.limits import ServiceLimits
from transport.ssh_algorithms import PQSSHKey
from transport.ssh_options import ssh_options_for_tier


def forged(public: asyncssh.SSHKey, signer: asyncssh.SSHKey) -> asyncssh.SSHKey:
    """A key presenting `public` (an authorized public key: public data) that signs
    with another key's secret: what a stranger who read the public key can do."""
    return type(public)(public.public_key_bytes, signer.secret_key_bytes)  # type: ignore[attr-defined]


async def settle(svc: Service) -> None:
    for _ in range(100):  # connection_lost runs after the client has seen the close
        if svc.server.admission.unauthenticated == 0:
            return
        await asyncio.sleep(0.02)


def count_verifications(monkeypatch: pytest.MonkeyPatch, key: asyncssh.SSHKey) -> list[int]:
    """Signatures verified by `key` (the client verifying the host key is not one)."""
    verified = [0]
    real = PQSSHKey.verify_ssh

    def counting(self: PQSSHKey, *args: Any) -> bool:
        verified[0] += self.public_data == key.public_data
        return real(self, *args)

    monkeypatch.setattr(PQSSHKey, "verify_ssh", counting)
    return verified


async def test_a_forged_signature_on_an_authorized_key_is_an_auth_failure(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    """validate_public_key accepts the key before asyncssh verifies the signature:
    the connection must still end as AUTHFAIL (5 s here, not noauth's 1 s) and be
    counted and logged as a refusal naming the key, and no principal is kept."""
    admission = AdmissionLimits(
        max_startups=ROOMY, penalties=Penalties(authfail=5, noauth=1, min=15, max=600)
    )
    svc = await start_service(tmp_path, keys, ServiceLimits(admission=admission))
    caplog.set_level(logging.INFO, logger="transport.server")
    fake = forged(keys.producer, keys.unknown)
    try:
        for _ in range(4):
            with pytest.raises(AuthRefused):
                async with connect_from(svc, "127.0.4.1", key=fake):  # type: ignore[attr-defined]
                    pass
            await settle(svc)
        # four failed authentications x authfail:5 = 20 s, past min 15: refused now
        assert svc.server.refused_by_reason["signature"] == 4, svc.server.refused_by_reason
        assert svc.server.admission.penalized("127.0.4.1")
        fingerprint = keys.producer.get_fingerprint()
        lines = [r.getMessage() for r in caplog.records if "signature" in r.getMessage()]
        assert len(lines) == 1, lines  # the first at once; the rest in the summary
        assert fingerprint in lines[0]
        assert "127.0.4.1" in lines[0]
        # the real key still gets in from elsewhere, with its principal
        async with svc.connect(keys.producer) as c:
            await c.ping()
    finally:
        await stop_service(svc)


async def test_one_connection_tries_at_most_max_auth_tries_keys(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 forged keys on one connection: 6 are tried (6 signatures verified), then
    the connection is closed, charged authfail and counted as auth_tries."""
    verified = count_verifications(monkeypatch, keys.producer)
    admission = AdmissionLimits(max_startups=ROOMY, penalties=Penalties(enabled=False))
    svc = await start_service(tmp_path, keys, ServiceLimits(admission=admission))
    fakes = [forged(keys.producer, keys.unknown) for _ in range(20)]
    try:
        with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
            async with asyncssh.connect(
                "127.0.0.1",
                svc.port,
                username="qssh",
                client_keys=fakes,
                known_hosts=str(svc.known_hosts),
                local_addr=("127.0.8.1", 0),
                agent_path=None,
                **ssh_options_for_tier(2, "client"),
            ):
                pass
        await settle(svc)
        assert verified[0] == 6, f"{verified[0]} signatures verified on one connection"
        assert svc.server.refused_by_reason["auth_tries"] == 1
        assert svc.server.admission.unauthenticated == 0
    finally:
        await stop_service(svc)


async def test_the_sixth_key_tried_still_gets_in(tmp_path: Path, keys: Keys) -> None:
    """A key query and its signed request are one try (as OpenSSH counts them): five
    keys the server does not know, then the right one, log in."""
    admission = AdmissionLimits(max_startups=ROOMY, penalties=Penalties(enabled=False))
    svc = await start_service(tmp_path, keys, ServiceLimits(admission=admission))
    strangers = [asyncssh.generate_private_key("ssh-falcon512") for _ in range(5)]
    try:
        async with QueueClient.connect(
            "127.0.0.1", svc.port, client_keys=[*strangers, keys.producer],
            known_hosts=svc.known_hosts,
        ) as c:  # fmt: skip
            await c.ping()
        with pytest.raises(AuthRefused):
            async with QueueClient.connect(
                "127.0.0.1", svc.port, client_keys=[*strangers, keys.unknown, keys.producer],
                known_hosts=svc.known_hosts,
            ):  # fmt: skip
                pass
    finally:
        await stop_service(svc)
