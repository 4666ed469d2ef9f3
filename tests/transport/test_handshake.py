"""Real asyncssh connections on 127.0.0.1: every PQ host/user key with each hybrid KEX,
and the refusals (classical client, wrong host key, unknown user key, tier ciphers)."""

from __future__ import annotations

import asyncio
import shutil

import asyncssh
import pytest

from tests.transport.sshutil import client_options, pq_server, run_command
from transport.crypto import available_kex, available_schemes
from transport.keys import generate_key
from transport.qkd import session_binding
from transport.ssh_algorithms import canonical_name
from transport.ssh_options import (
    HIGH_ASSURANCE_HOST_KEYS,
    PolicyError,
    connection_policy,
    ssh_options_for_tier,
)

ALGS = [s.spec.ssh_name for s in available_schemes()]
KEXES = available_kex()


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[asyncssh.SSHKey, asyncssh.SSHKey]]:
    return {alg: (generate_key(alg), generate_key(alg)) for alg in ALGS}


@pytest.fixture(scope="module")
def falcon() -> tuple[asyncssh.SSHKey, asyncssh.SSHKey]:
    return generate_key("ssh-falcon512"), generate_key("ssh-falcon512")


@pytest.mark.parametrize("kex", KEXES)
@pytest.mark.parametrize("alg", ALGS)
async def test_pq_host_and_user_keys_connect_with_each_hybrid_kex(
    keys: dict[str, tuple[asyncssh.SSHKey, asyncssh.SSHKey]], alg: str, kex: str
) -> None:
    # The client offers only ``kex`` and only ``alg``, so a completed session used them.
    host_key, user_key = keys[alg]
    async with pq_server(host_key, [user_key]) as server:
        options = client_options(server, user_key, kex_algs=[kex])
        options["server_host_key_algs"] = [alg]
        options["signature_algs"] = [alg]
        async with asyncssh.connect(**options) as conn:
            result = await conn.run("ping", check=True)
            assert result.stdout == "ran ping\n"
            server_key = conn.get_server_host_key()
            assert server_key is not None
            assert server_key.public_data == host_key.public_data


@pytest.mark.parametrize("kex", KEXES)
async def test_both_ends_see_the_same_session_id_to_bind_qkd_keys_to(
    falcon: tuple[asyncssh.SSHKey, asyncssh.SSHKey], kex: str
) -> None:
    """Tier-4 sealing binds its key to the SSH session id, which asyncssh keeps in a
    private attribute (``transport.qkd.session_binding``): this catches an asyncssh that
    moved it. It is the first exchange hash: both ends agree, each connection differs."""
    host_key, user_key = falcon
    # the exchange hash is the KEX's hash: sha256, sha384 or (sntrup761) sha512
    hash_name = kex.partition("@")[0].rsplit("-", 1)[1]
    digest_size = {"sha256": 32, "sha384": 48, "sha512": 64}[hash_name]
    async with pq_server(host_key, [user_key]) as server:
        options = client_options(server, user_key, kex_algs=[kex])
        seen = []
        for _ in range(2):
            async with asyncssh.connect(**options) as conn:
                await conn.run("ping", check=True)
                client_side = session_binding(conn)
                server_side = session_binding(server.connections[-1])
                assert client_side == server_side
                assert len(client_side) == digest_size
                seen.append(client_side)
        assert seen[0] != seen[1]


async def test_a_client_offering_only_classical_kex_is_refused(
    falcon: tuple[asyncssh.SSHKey, asyncssh.SSHKey],
) -> None:
    host_key, user_key = falcon
    async with pq_server(host_key, [user_key]) as server:
        options = client_options(server, user_key, kex_algs=["curve25519-sha256"])
        with pytest.raises(asyncssh.KeyExchangeFailed, match="key exchange"):
            await run_command(options)


async def test_a_client_accepting_only_classical_host_keys_is_refused(
    falcon: tuple[asyncssh.SSHKey, asyncssh.SSHKey],
) -> None:
    host_key, user_key = falcon
    async with pq_server(host_key, [user_key]) as server:
        options = client_options(server, user_key)
        options["server_host_key_algs"] = ["ssh-ed25519"]
        with pytest.raises(asyncssh.KeyExchangeFailed, match="host key"):
            await run_command(options)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
async def test_stock_openssh_client_with_classical_kex_is_refused(
    falcon: tuple[asyncssh.SSHKey, asyncssh.SSHKey],
) -> None:
    host_key, user_key = falcon
    async with pq_server(host_key, [user_key]) as server:
        proc = await asyncio.create_subprocess_exec(
            "ssh", "-F", "/dev/null", "-p", str(server.port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "KexAlgorithms=curve25519-sha256",
            "-o", "ConnectTimeout=10", "validator@127.0.0.1", "ping",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 255
        assert b"no matching key exchange method" in stderr


async def test_wrong_host_key_is_not_verifiable(
    falcon: tuple[asyncssh.SSHKey, asyncssh.SSHKey],
) -> None:
    host_key, user_key = falcon
    impostor = generate_key("ssh-falcon512")
    async with pq_server(impostor, [user_key]) as server:
        options = client_options(server, user_key, known_hosts=server.known_hosts(host_key))
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await run_command(options)


async def test_unknown_client_key_is_denied(
    falcon: tuple[asyncssh.SSHKey, asyncssh.SSHKey],
) -> None:
    host_key, user_key = falcon
    stranger = generate_key("ssh-falcon512")
    async with pq_server(host_key, [user_key]) as server:
        with pytest.raises(asyncssh.PermissionDenied):
            await run_command(client_options(server, stranger))


async def test_classical_client_key_is_denied_even_if_authorized(
    falcon: tuple[asyncssh.SSHKey, asyncssh.SSHKey],
) -> None:
    host_key, _ = falcon
    ed = asyncssh.generate_private_key("ssh-ed25519")
    async with pq_server(host_key, [ed]) as server:
        options = client_options(server, ed)
        options["signature_algs"] = ["ssh-ed25519"]
        with pytest.raises(asyncssh.PermissionDenied):
            await run_command(options)


async def test_tier2_server_refuses_a_client_without_aes256_gcm(
    falcon: tuple[asyncssh.SSHKey, asyncssh.SSHKey],
) -> None:
    host_key, user_key = falcon
    async with pq_server(host_key, [user_key], tier=2) as server:
        options = client_options(server, user_key, tier=1)
        options["encryption_algs"] = ["chacha20-poly1305@openssh.com"]
        with pytest.raises(asyncssh.KeyExchangeFailed, match="encryption"):
            await run_command(options)
        options["encryption_algs"] = ["aes256-gcm@openssh.com"]
        assert await run_command(options) == "ran ping\n"


async def test_tier1_server_accepts_chacha20(
    falcon: tuple[asyncssh.SSHKey, asyncssh.SSHKey],
) -> None:
    host_key, user_key = falcon
    async with pq_server(host_key, [user_key], tier=1) as server:
        options = client_options(server, user_key, tier=1)
        options["encryption_algs"] = ["chacha20-poly1305@openssh.com"]
        assert await run_command(options) == "ran ping\n"


async def test_client_restricted_to_falcon1024_picks_that_host_key(
    keys: dict[str, tuple[asyncssh.SSHKey, asyncssh.SSHKey]],
) -> None:
    falcon512_host, user_key = keys["ssh-falcon512"]
    falcon1024_host, _ = keys["ssh-falcon1024"]
    server_options = ssh_options_for_tier(2, "server")
    authorized = asyncssh.import_authorized_keys(user_key.export_public_key().decode())
    server = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0,
        server_host_keys=[falcon512_host, falcon1024_host],
        authorized_client_keys=authorized,
        process_factory=lambda p: p.exit(0),
        **server_options,
    )  # fmt: skip
    try:
        port = server.sockets[0].getsockname()[1]
        lines = [
            f"[127.0.0.1]:{port} {k.export_public_key().decode()}"
            for k in (falcon512_host, falcon1024_host)
        ]
        options = ssh_options_for_tier(2, allowed_host_key_algs=["ssh-falcon1024"])
        async with asyncssh.connect(
            "127.0.0.1", port, username="v", client_keys=[user_key], agent_path=None,
            known_hosts=asyncssh.import_known_hosts("".join(lines)), config=(),
            **options,
        ) as conn:  # fmt: skip
            chosen = conn.get_server_host_key()
            assert chosen is not None
            assert chosen.get_algorithm() == "ssh-falcon1024"
    finally:
        server.close()
        await server.wait_closed()


def test_policy_refuses_host_keys_the_tier_does_not_allow() -> None:
    policy = connection_policy(2, allowed_host_key_algs=HIGH_ASSURANCE_HOST_KEYS)
    falcon512 = generate_key("ssh-falcon512")
    falcon1024 = generate_key("ssh-falcon1024")
    with pytest.raises(PolicyError, match="tier 2 accepts host keys ssh-falcon1024"):
        policy.select_host_keys([falcon512])
    assert policy.select_host_keys([falcon512, falcon1024]) == [falcon1024]


def test_server_and_client_options_agree_at_every_tier() -> None:
    for tier in (1, 2, 3, 4):
        client = ssh_options_for_tier(tier, "client")
        server = ssh_options_for_tier(tier, "server")
        for name in ("kex_algs", "encryption_algs", "mac_algs", "compression_algs"):
            assert client[name] == server[name]
        assert client["signature_algs"] == server["signature_algs"]
        assert client["server_host_key_algs"] == server["signature_algs"]
        assert "server_host_key_algs" not in server


def test_options_never_offer_classical_kex_or_host_keys() -> None:
    for tier in (1, 2, 3, 4):
        options = ssh_options_for_tier(tier)
        assert options["kex_algs"][0] == "mlkem768x25519-sha256"  # type: ignore[index]
        for kex in options["kex_algs"]:  # type: ignore[attr-defined]
            assert kex.startswith(("mlkem", "sntrup")), kex
        for alg in options["server_host_key_algs"]:  # type: ignore[attr-defined]
            assert canonical_name(alg) in ALGS
        assert options["compression_algs"] == ["none"]
        if tier >= 2:
            assert options["encryption_algs"] == ["aes256-gcm@openssh.com"]


def test_invalid_tier_and_unavailable_host_key_set_are_refused() -> None:
    with pytest.raises(PolicyError, match=r"tier must be 1\.\.4"):
        ssh_options_for_tier(0)
    with pytest.raises(PolicyError, match="none of the allowed host-key algorithms"):
        ssh_options_for_tier(2, allowed_host_key_algs=["ssh-ed25519"])
    with pytest.raises(PolicyError, match="none of the allowed user-key algorithms"):
        ssh_options_for_tier(2, allowed_user_key_algs=["ssh-rsa"])


def test_no_tier_options_contain_the_reference_design_mistake() -> None:
    # "Falcon-512 key exchange" was a defect: Falcon only authenticates.
    for tier in (1, 2, 3, 4):
        assert not any("falcon" in k for k in ssh_options_for_tier(tier)["kex_algs"])  # type: ignore[attr-defined]
