"""``qssh-queue HOST tier``: node tier, session tier and why; tier 4 through QKD* options."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from hardware.simulators.kme_server import KMESimulator
from hardware.simulators.tls import ThrowawayPKI
from tests.subprocesses import child_env
from tests.tiers.conftest import MASTER, SLAVE, TierService, transaction
from transport.keys import write_key_pair
from transport.qkd import QKDSettings


def qssh_config(tmp_path: Path, svc: TierService, qkd_lines: str = "") -> Path:
    identity, _ = write_key_pair(svc.keys.everything, tmp_path / "id_falcon512", force=True)
    path = tmp_path / "qssh_config"
    path.write_text(
        f"Host node\n  HostName 127.0.0.1\n  Port {svc.port}\n  User qssh\n"
        f"  IdentityFile {identity}\n  UserKnownHostsFile {svc.known_hosts}\n" + qkd_lines
    )
    return path


async def qssh_queue(config: Path, *args: str) -> tuple[int, str, str]:
    env = child_env(QSSH_HOME=str(config.parent))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "transport.client_cli",
        "-F",
        str(config),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_tier_shows_node_and_session_tiers_and_why(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]], tmp_path: Path
) -> None:
    svc, _ = sealed_service
    config = qssh_config(tmp_path, svc)
    rc, out, err = await qssh_queue(config, "--json", "node", "tier")
    assert rc == 0, err
    view = orjson.loads(out)
    assert (view["tier"], view["node"]["tier"], view["session"]["tier"]) == (3, 4, 3)
    assert "not sealed with a QKD key" in " ".join(view["session"]["reasons"])
    rc, out, err = await qssh_queue(config, "node", "tier")
    assert rc == 0, err
    for word in ("effective", "node", "session", "QuantumSecured", "not sealed", "cipher="):
        assert word in out


async def test_qkd_options_give_the_cli_a_sealed_tier_4_session(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
    tmp_path: Path,
    pki: ThrowawayPKI,
    kme_pair: tuple[KMESimulator, KMESimulator],
) -> None:
    svc, _ = sealed_service
    master, _ = kme_pair
    alice = pki.clients[MASTER]
    config = qssh_config(
        tmp_path,
        svc,
        f"  QKDKME {master.url}\n  QKDSAEID {MASTER}\n  QKDPeerSAEID {SLAVE}\n"
        f"  QKDCertificate {alice.cert}\n  QKDKey {alice.key}\n  QKDCA {pki.ca}\n"
        "  QKDRequired yes\n",
    )
    rc, out, err = await qssh_queue(config, "--json", "node", "tier")
    assert rc == 0, err
    view = orjson.loads(out)
    assert (view["tier"], view["session"]["sealed"]) == (4, True)
    tx = orjson.dumps(transaction("2000000")).decode()
    rc, out, err = await qssh_queue(config, "--json", "node", "submit", tx)
    assert rc == 0, err
    assert orjson.loads(out)["persisted"] is True


async def test_a_qkd_kme_that_is_not_https_is_a_usage_error(
    sealed_service: tuple[TierService, Callable[..., QKDSettings]],
    tmp_path: Path,
    pki: ThrowawayPKI,
) -> None:
    svc, _ = sealed_service
    alice = pki.clients[MASTER]
    config = qssh_config(
        tmp_path,
        svc,
        f"  QKDKME http://127.0.0.1:1\n  QKDSAEID {MASTER}\n  QKDPeerSAEID {SLAVE}\n"
        f"  QKDCertificate {alice.cert}\n  QKDKey {alice.key}\n  QKDCA {pki.ca}\n",
    )
    rc, _, err = await qssh_queue(config, "node", "tier")
    assert rc == 2, err
    assert "QKDKME" in err
    assert "Traceback" not in err
