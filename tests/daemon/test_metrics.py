"""The Prometheus exporter: counters move under a small real load (SSH and node endpoint)."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from prometheus_client.parser import text_string_to_metric_families

import transport.ssh_algorithms  # noqa: F401 - registers ssh-falcon512
from sidecar import QueueMessage
from sidecar.daemon.config import ConfigError, parse_endpoint
from sidecar.state import message_cost
from tests.subprocesses import Operator, free_port
from transport.client import AuthRefused, QueueClient

from .harness import call_line

GOSSIP = {"kind": "gossip", "topic": "t", "data": "aGk="}
VOTE = {"kind": "vote", "validator": "bob", "block_hash": "ab" * 32, "signature": "c2ln"}


def accounted_bytes(votes: int, gossips: int) -> int:
    return votes * message_cost(QueueMessage.from_json(VOTE).encoded_size) + gossips * (
        message_cost(QueueMessage.from_json(GOSSIP).encoded_size)
    )


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def wait_metric(port: int, name: str, want: float, timeout: float = 20.0) -> float:
    """Gauges are refreshed from the event loop about once a second: poll, bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    value = scrape(port).get(name)
    while value != want and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        value = scrape(port).get(name)
    return -1.0 if value is None else value


async def test_counters_move_under_load(tmp_path: Path, spawn: Any) -> None:
    mport = free_port()
    d = spawn(["--port", str(free_port()), "--data-dir", "d", "--metrics", f"127.0.0.1:{mport}"])
    d.wait_ready()
    ssh_port = d.port("ssh")
    op = Operator.of(tmp_path / "d")
    before = scrape(mport)
    assert before["qssh_security_tier"] == 2
    assert before["qssh_submits_total{mode=sync}"] == 0

    async with op.connect(ssh_port) as c:
        await asyncio.gather(*(c.submit(VOTE) for _ in range(10)))  # sync, group commit
        for _ in range(5):
            await c.submit(GOSSIP)  # async
        assert await wait_metric(mport, "qssh_connections", 1) == 1
        assert await wait_metric(mport, "qssh_queue_depth{priority=critical}", 10) == 10
        # the queue's own accounting beside the process's RSS: 15 messages, each at
        # its canonical size plus the measured per-message overhead
        queued = await wait_metric(mport, "qssh_queue_bytes", accounted_bytes(10, 5))
        assert queued == accounted_bytes(10, 5)
        now = scrape(mport)
        assert now["qssh_queue_bytes_limit"] == 1024**3
        assert now["process_resident_memory_bytes"] > queued
        assert (await c.pop()) is not None
        lease = await c.lease(timeout=30)
        assert lease is not None
        await c.ack(lease["lease_id"])
        lease2 = await c.lease(timeout=30)
        assert lease2 is not None
        await c.release(lease2["lease_id"])
    call_line(tmp_path / "d" / "node.sock", "qssh_getValidatorName")

    stranger = asyncssh.generate_private_key("ssh-falcon512")
    with pytest.raises(AuthRefused):
        async with QueueClient.connect(
            "127.0.0.1",
            ssh_port,
            username="",
            client_keys=[stranger],
            known_hosts=op.known_hosts,
        ):
            pass

    after = scrape(mport)
    assert after["qssh_submits_total{mode=sync}"] == 10
    assert after["qssh_submits_total{mode=async}"] == 5
    assert after["qssh_wal_fsync_seconds_count"] >= 1
    assert after["qssh_wal_group_commit_batch_size_sum"] >= 10
    assert after["qssh_pops_total"] == 1
    assert after["qssh_leases_total"] == 2
    assert after["qssh_acks_total"] == 1
    assert after["qssh_redeliveries_total"] == 1
    assert after["qssh_auth_failures_total"] >= 1
    assert await wait_metric(mport, "qssh_ssh_refused_total{reason=key}", 1) == 1
    assert after["qssh_ssh_unauthenticated"] == 0
    assert after["qssh_ssh_penalized_sources"] == 0
    assert after["qssh_node_rpc_requests_total{method=qssh_getValidatorName}"] == 1
    assert after["qssh_wal_bytes"] > before["qssh_wal_bytes"]
    assert await wait_metric(mport, "qssh_connections", 0) == 0
    assert d.stop() == 0


def test_metrics_address_must_be_loopback() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        parse_endpoint("0.0.0.0:9615", "metrics.listen", loopback_only=True)


async def test_compactions_are_counted(tmp_path: Path, spawn: Any) -> None:
    mport = free_port()
    (tmp_path / "c.toml").write_text(
        f'listen = "127.0.0.1:{free_port()}"\ndata_dir = "d"\n'
        "[durability]\ncompact_bytes = 1\n"
        f'[metrics]\nlisten = "127.0.0.1:{mport}"\n'
        "[hardware]\nuse_udev = false\nchar_devices = []\n"
    )
    d = spawn(["--config", "c.toml"])
    d.wait_ready()
    sock = tmp_path / "d" / "node.sock"
    for n in range(20):
        block = {"BlockImport": {"block_hash": [n] * 32, "block_number": n, "timestamp": n}}
        call_line(sock, "qssh_submitMessage", [block])
    for _ in range(20):
        assert call_line(sock, "qssh_popMessage")["result"] is not None
    call_line(sock, "qssh_submitMessage", [block])  # a commit after the pops: idle hook runs
    for _ in range(100):  # bounded: compaction runs when the committer goes idle
        if scrape(mport).get("qssh_wal_compactions_total", 0) >= 1:
            break
        await asyncio.sleep(0.1)
    assert scrape(mport)["qssh_wal_compactions_total"] >= 1
    assert d.stop() == 0
