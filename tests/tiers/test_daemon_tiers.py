"""Tier 3 end to end on the real ``qssh-sidecar serve`` with a simulated QRNG on a pty.

Healthy QRNG → tier 3 → an async submit is made sync, proven by SIGKILL; the QRNG
publishes ``entropy_share`` messages. The QRNG turning stuck mid-run fails its health
test → tier 2, publishing stops, async is accepted again, connected clients are told.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hardware.simulators.kme_server import KMESimulator, paired_kmes
from hardware.simulators.serial_qrng import Behaviour, SerialQRNGSimulator
from hardware.simulators.tls import ThrowawayPKI
from sidecar import QppValidatorQueue
from sidecar.errors import TierRequired
from tests.daemon.harness import Daemon, call_line
from tests.subprocesses import Operator, free_port
from tests.tiers.conftest import MASTER, SLAVE, kme_client, transaction
from transport.qkd import QKDSettings

GOSSIP = {"kind": "gossip", "topic": "durable?", "data": "aGk="}
SHARE_BYTES = 1024


def config(
    tmp_path: Path, sim: SerialQRNGSimulator, metrics_port: int, check_interval: float = 60
) -> None:
    (tmp_path / "c.toml").write_text(
        f'listen = "127.0.0.1:{free_port()}"\ndata_dir = "d"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        "[hardware]\nuse_udev = false\nchar_devices = []\nsample_bytes = 2048\n"
        f"check_interval = {check_interval}\n"
        f'serial_ports = [{{ path = "{sim.path}", kind = "quantum_local", simulated = true }}]\n'
        f"[tiers.entropy]\ninterval = 0.1\nbytes = {SHARE_BYTES}\n"
    )


def kme_section(pki: ThrowawayPKI, slave: KMESimulator) -> str:
    """The daemon's [hardware.kme] table: bob's side of the simulated KME pair."""
    bob = pki.clients[SLAVE]
    return (
        f'[hardware.kme]\nurl = "{slave.url}"\nsae_id = "{SLAVE}"\nslave_sae_id = "{MASTER}"\n'
        f'cert = "{bob.cert}"\nkey = "{bob.key}"\nca = "{pki.ca}"\nsimulated = true\n'
    )


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def wait_metric_at_least(port: int, name: str, value: float, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = metric(port, name)
        if seen >= value:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{name} stayed below {value}")


def operator(tmp_path: Path, port: int, **kwargs: Any) -> Any:
    return Operator.of(tmp_path / "d").connect(port, **kwargs)


@contextlib.asynccontextmanager
async def sealed_operator(
    tmp_path: Path, d: Daemon, pki: ThrowawayPKI, master: KMESimulator
) -> AsyncIterator[Any]:
    """The operator on a tier-4 session: QKD keys from alice's KME, sealing required."""
    client_kme = kme_client(pki, master, MASTER)
    qkd = QKDSettings(kme=client_kme, sae_id=MASTER, peer_sae_id=SLAVE)
    try:
        async with operator(tmp_path, d.port("ssh"), qkd=qkd, require_qkd=True) as c:
            yield c
    finally:
        await client_kme.aclose()


async def messages_on_disk(data_dir: Path) -> list[Any]:
    """Every message the log holds (leased to look, never consumed)."""
    q = await QppValidatorQueue.open("alice", data_dir / "queue")
    try:
        seen = []
        for _ in range(100_000):
            lease = await q.lease(60)
            if lease is None:
                break
            seen.append(lease.item)
        return seen
    finally:
        await q.close()


async def test_tier_3_upgrade_survives_sigkill_and_a_stuck_qrng_drops_to_tier_2(
    tmp_path: Path, spawn: Any
) -> None:
    mport = free_port()
    sim = SerialQRNGSimulator("good")
    sim.start()
    try:
        config(tmp_path, sim, mport)
        d: Daemon = spawn(["--config", "c.toml"])
        d.wait_ready()
        assert d.wait_line(r"^tier 3 EntropyEnhanced")
        qrng = re.escape(sim.path)
        # First start at tier 3: both new keys were made from QRNG-mixed seeds.
        d.wait_line(rf"^host key \S+: ssh-falcon512 \S+ \(new, seed mixed with QRNG {qrng}\)$")
        d.wait_line(
            rf"^local operator key \S+: ssh-falcon512 \S+ \(new, seed mixed with QRNG {qrng}\)$"
        )
        d.wait_line(r"^tiers: tier-4 sealing off")
        d.wait_line(
            r"^entropy: QRNG \S+ mixed into new keys and tier-4 nonces; publishing entropy_share"
        )
        async with operator(tmp_path, d.port("ssh")) as c:
            tier = await c.tier()
            assert (tier["tier"], tier["node"]["tier"], tier["session"]["tier"]) == (3, 3, 3)
            result = await c.submit(GOSSIP, "async")
            assert (result["mode"], result["upgraded"], result["persisted"]) == (
                "sync",
                True,
                True,
            )
        await asyncio.to_thread(wait_metric_at_least, mport, "qssh_entropy_shares_total", 2)
        d.proc.kill()  # SIGKILL: only what was fsync'd survives
        d.proc.wait(30)

        on_disk = await messages_on_disk(tmp_path / "d")
        gossip = [m for m in on_disk if m.message.to_json()["kind"] == "gossip"]
        assert len(gossip) == 1
        assert (gossip[0].upgraded, gossip[0].persisted) == (True, True)
        shares = [m.message.to_json() for m in on_disk if m.priority == 75]
        assert len(shares) >= 2
        assert {s["kind"] for s in shares} == {"entropy_share"}
        assert {s["device_id"] for s in shares} == {sim.path}
        assert {s["qber_percent"] for s in shares} == {0}
        assert all(len(base64.b64decode(s["entropy"])) == SHARE_BYTES for s in shares)

        # Second run on the same log: then the QRNG gets stuck while serving.
        d2: Daemon = spawn(["--config", "c.toml"])
        d2.wait_ready()
        d2.wait_line(r"publishing entropy_share every")
        async with operator(tmp_path, d2.port("ssh")) as c:
            sim.behaviour = Behaviour.STUCK
            d2.wait_line(r"^entropy: QRNG \S+ failed .*entropy_share publishing stopped", 60)
            d2.wait_line(r"^tier changed 3 -> 2: ", 60)
            await c.ping()
            assert [n["tier"] for n in c.tier_notices] == [2]
            result = await c.submit(GOSSIP, "async")
            assert (result["mode"], result["upgraded"], result["persisted"]) == (
                "async",
                False,
                False,
            )
            tier = await c.tier()
            assert tier["node"]["tier"] == 2
            assert any("health test" in r for r in tier["node"]["reasons"])
        assert metric(mport, "qssh_entropy_source_failures_total") == 1
        assert metric(mport, "qssh_entropy_publishing") == 0
        published = metric(mport, "qssh_entropy_shares_total")
        await asyncio.sleep(1.0)  # ten publishing intervals
        assert metric(mport, "qssh_entropy_shares_total") == published
        assert d2.stop() == 0
    finally:
        sim.stop()


async def test_daemon_with_a_kme_seals_sessions_and_takes_a_2m_transaction(
    tmp_path: Path, spawn: Any, pki: ThrowawayPKI, kme_pair: tuple[KMESimulator, KMESimulator]
) -> None:
    master, slave = kme_pair
    (tmp_path / "c.toml").write_text(
        f'listen = "127.0.0.1:{free_port()}"\ndata_dir = "d"\n[metrics]\nlisten = ""\n'
        "[hardware]\nuse_udev = false\nchar_devices = []\ncheck_interval = 60\n"
        + kme_section(pki, slave)
        + "[tiers.sealing]\nrekey_frames = 20\n"
    )
    d: Daemon = spawn(["--config", "c.toml"])
    d.wait_ready()
    assert d.wait_line(r"^tier 4 QuantumSecured")
    d.wait_line(r"^tiers: tier-4 sealing on, QKD keys from https://127\.0\.0\.1:\d+ ")
    async with sealed_operator(tmp_path, d, pki, master) as c:
        tier = await c.tier()
        assert (tier["tier"], tier["node"]["tier"], tier["session"]["tier"]) == (4, 4, 4)
        assert (await c.submit(transaction("2000000")))["persisted"] is True
        for n in range(500):  # bounded; the daemon announced rekey_frames = 20
            await c.submit(transaction("1", n + 10))
            if c.sealing.stream.rekeys >= 2:
                break
        assert c.sealing.stream.rekeys >= 2
    async with operator(tmp_path, d.port("ssh")) as plain:
        with pytest.raises(TierRequired, match="needs tier 4"):
            await plain.submit(transaction("2000000", 99))
    assert d.stop() == 0


async def test_a_qrng_that_recovers_gives_tier_3_and_publishing_back(
    tmp_path: Path, spawn: Any
) -> None:
    mport = free_port()
    with SerialQRNGSimulator("good") as sim:
        config(tmp_path, sim, mport, check_interval=0.5)
        d: Daemon = spawn(["--config", "c.toml"])
        d.wait_ready()
        d.wait_line(r"publishing entropy_share every")
        sim.behaviour = Behaviour.STUCK
        d.wait_line(r"^tier changed 3 -> 2: ", 60)
        sim.behaviour = Behaviour.GOOD
        d.wait_line(r"^tier changed 2 -> 3: ", 60)
        before = metric(mport, "qssh_entropy_shares_total")
        await asyncio.to_thread(
            wait_metric_at_least, mport, "qssh_entropy_shares_total", before + 2
        )
        assert metric(mport, "qssh_entropy_publishing") == 1
        assert metric(mport, "qssh_entropy_source_failures_total") == 1
        assert d.stop() == 0


MDWE = [sys.executable, str(Path(__file__).parents[1] / "daemon" / "mdwe_exec.py")]
_PROBE = """
import ctypes, mmap
print(ctypes.CDLL(None).prctl(66, 0, 0, 0, 0))  # PR_GET_MDWE
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("write-execute allowed")
except PermissionError:
    print("write-execute refused")
"""


async def test_a_tier_4_sidecar_runs_under_memory_deny_write_execute(
    tmp_path: Path, spawn: Any, pki: ThrowawayPKI, kme_pair: tuple[KMESimulator, KMESimulator]
) -> None:
    """systemd/qssh-sidecar@.service sets ``MemoryDenyWriteExecute=yes``. Under the same
    kernel rule (PR_SET_MDWE) the sidecar does everything a tier-4 node does: udev and
    serial probing, health tests, QRNG-seeded Falcon keys (PQClean through cffi and
    ctypes), the KME over mutual TLS, ML-KEM hybrid SSH, sealed frames, the log."""
    probe = subprocess.run(
        [*MDWE, sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode == 77:
        pytest.skip(f"this kernel cannot deny write-execute memory: {probe.stderr.strip()}")
    # set, kept across execve into a new Python, and enforced there
    assert probe.stdout.split("\n")[:2] == ["1", "write-execute refused"], probe
    master, slave = kme_pair
    with SerialQRNGSimulator("good") as sim:
        (tmp_path / "c.toml").write_text(
            f'listen = "127.0.0.1:{free_port()}"\ndata_dir = "d"\n[metrics]\nlisten = ""\n'
            "[hardware]\nchar_devices = []\nsample_bytes = 2048\ncheck_interval = 60\n"
            f'serial_ports = [{{ path = "{sim.path}", kind = "quantum_local", '
            "simulated = true }]\n" + kme_section(pki, slave)
        )
        d: Daemon = spawn(["--config", "c.toml"], prefix=MDWE)
        d.wait_ready()
        assert d.wait_line(r"^tier 4 QuantumSecured")
        d.wait_line(r"^host key \S+: ssh-falcon512 \S+ \(new, seed mixed with QRNG ")
        async with sealed_operator(tmp_path, d, pki, master) as c:
            assert (await c.tier())["session"]["tier"] == 4
            assert (await c.submit(transaction("2000000")))["persisted"] is True
            assert await c.pop() is not None
        depth = await asyncio.to_thread(
            call_line, tmp_path / "d" / "node.sock", "qssh_getQueueDepth"
        )
        assert isinstance(depth["result"], int)
        assert d.stop() == 0
    assert not [e for e in d.errors if "Traceback" in e or "mmap" in e], d.errors[-20:]


async def test_a_tier_3_daemon_stays_at_tier_3_through_periodic_health_checks(
    tmp_path: Path, spawn: Any
) -> None:
    """The testnet's bob lost tier 3 at its first periodic check: its QRNG reader had
    read fewer bytes than the startup minimum since start. Few, rare shares here too."""
    mport = free_port()
    with SerialQRNGSimulator("good") as sim:
        config(tmp_path, sim, mport, check_interval=0.2)
        text = (tmp_path / "c.toml").read_text()
        (tmp_path / "c.toml").write_text(
            text.replace(f"interval = 0.1\nbytes = {SHARE_BYTES}", "interval = 0.5\nbytes = 8")
        )
        d: Daemon = spawn(["--config", "c.toml"])
        d.wait_ready()
        tiers = []
        for _ in range(600):  # bounded: 60 s
            tiers.append(metric(mport, "qssh_security_tier"))
            if metric(mport, "qssh_hardware_checks_total") >= 6:  # start + 5 periodic
                break
            await asyncio.sleep(0.1)
        assert metric(mport, "qssh_hardware_checks_total") >= 6
        assert set(tiers) == {3.0}
        assert metric(mport, 'qssh_security_tier_changes_total{direction="down"}') == 0
        assert metric(mport, "qssh_entropy_publishing") == 1
        assert not [ln for ln in d.lines + d.errors if "tier changed" in ln], d.lines
        assert d.stop() == 0


async def test_kme_requests_write_no_log_line_of_their_own(
    tmp_path: Path, spawn: Any, pki: ThrowawayPKI, kme_pair: tuple[KMESimulator, KMESimulator]
) -> None:
    """httpx logs every request at INFO ("HTTP Request: GET https://kme/... 200 OK"): a
    tier-4 daemon wrote one line per health check (every ``check_interval``, for ever)
    and one per sealed channel and rekey. Its logger stays at WARNING, as asyncssh's."""
    master, slave = kme_pair
    mport = free_port()
    (tmp_path / "c.toml").write_text(
        f'listen = "127.0.0.1:{free_port()}"\ndata_dir = "d"\n'
        f'[metrics]\nlisten = "127.0.0.1:{mport}"\n'
        "[hardware]\nuse_udev = false\nchar_devices = []\ncheck_interval = 0.2\n"
        + kme_section(pki, slave)
    )
    d: Daemon = spawn(["--config", "c.toml"])
    d.wait_ready()
    await asyncio.to_thread(wait_metric_at_least, mport, "qssh_hardware_checks_total", 4)
    async with sealed_operator(tmp_path, d, pki, master) as c:
        assert (await c.tier())["session"]["tier"] == 4
    assert d.stop() == 0
    said = [ln for ln in d.lines + d.errors if "HTTP Request" in ln or "/api/v1/keys/" in ln]
    assert not said, said


async def test_a_full_queue_is_said_once_by_the_entropy_publisher_until_it_publishes_again(
    tmp_path: Path, spawn: Any
) -> None:
    """A full queue (a peer down long enough ends there: docs/operations.md) refused
    every entropy_share, and each refusal was a WARNING line: one per
    ``tiers.entropy.interval`` for as long as the queue stayed full. Now one line, and
    one when a share is published again."""
    mport = free_port()
    with SerialQRNGSimulator("good") as sim:
        config(tmp_path, sim, mport)
        text = (tmp_path / "c.toml").read_text()
        (tmp_path / "c.toml").write_text(
            text.replace("interval = 0.1\n", "interval = 0.02\n")
            + "[limits]\nmax_queue_messages = 2\n"
        )
        d: Daemon = spawn(["--config", "c.toml"])
        d.wait_ready()
        d.wait_line(r"^entropy_share not published: queue holds 2 messages")
        for _ in range(20):  # bounded: 2 s, about 100 more refusals at 0.02 s
            if len(refusals(d)) > 1:
                break
            await asyncio.sleep(0.1)
        assert len(refusals(d)) == 1, refusals(d)
        async with operator(tmp_path, d.port("ssh")) as c:
            assert await c.pop() is not None  # room for one more share
        d.wait_line(r"^entropy_share published again")
        assert d.stop() == 0
    assert len(refusals(d)) <= 2, refusals(d)  # and once more when it filled up again


def refusals(d: Daemon) -> list[str]:
    return [ln for ln in d.errors if "entropy_share not published" in ln]


async def test_a_tier_drop_is_a_warning(tmp_path: Path, spawn: Any, pki: ThrowawayPKI) -> None:
    """The KME becoming unreachable took a tier-4 node to tier 2 (sessions unsealed,
    $2M transactions refused) with one INFO line, `tier changed 4 -> 2: …`: below
    WARNING, where a failed QRNG is an ERROR. A drop is a WARNING (stderr) now."""
    _, slave = paired_kmes(pki)
    slave.start()
    try:
        (tmp_path / "c.toml").write_text(
            f'listen = "127.0.0.1:{free_port()}"\ndata_dir = "d"\n[metrics]\nlisten = ""\n'
            "[hardware]\nuse_udev = false\nchar_devices = []\ncheck_interval = 0.2\n"
            + kme_section(pki, slave)
        )
        d: Daemon = spawn(["--config", "c.toml"])
        d.wait_ready()
        d.wait_line(r"^tier 4 QuantumSecured")
    finally:
        slave.stop()  # unreachable
    d.wait_line(r"^tier changed 4 -> 2: tier 4 unavailable: KME ", 60)
    assert d.stop() == 0
    assert [ln for ln in d.errors if ln.startswith("tier changed 4 -> 2: ")], d.errors
    assert not [ln for ln in d.lines if ln.startswith("tier changed")], d.lines
