"""examples/testnet: three sidecars at tiers 2, 3, 4 start, answer `tier`, relay a
broadcast block from alice to bob and charlie (a full mesh), and stop cleanly."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.subprocesses import REPO, child_env, is_listening, log_message

UP = REPO / "examples" / "testnet" / "up"
DOWN = REPO / "examples" / "testnet" / "down"


def idle_port_bases() -> tuple[int, int]:
    """Two bases of three idle loopback ports each, away from the defaults (22222, 9615)
    so a testnet or `make run` someone has up does not collide with this one, and below
    Linux's ephemeral range (32768-60999): the sidecars' relay links connect out while
    the others start, and an outgoing connection must not take a port one will listen on."""
    for _ in range(200):
        ssh, metrics = random.randrange(23000, 27900), random.randrange(28000, 32700)
        ports = [*range(ssh, ssh + 3), *range(metrics, metrics + 3)]
        if not any(is_listening(p, 0.2) for p in ports):
            return ssh, metrics
    raise AssertionError("no three consecutive idle ports found on 127.0.0.1")


@pytest.fixture
def testnet(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], str]]:
    ssh_base, metrics_base = idle_port_bases()
    env = child_env(
        TESTNET_DIR=str(tmp_path / "run"),
        PYTHON=sys.executable,
        TESTNET_PORT_BASE=str(ssh_base),
        TESTNET_METRICS_BASE=str(metrics_base),
    )
    up = subprocess.run([UP], env=env, capture_output=True, text=True, timeout=240, check=False)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield tmp_path / "run", env, up.stdout
    finally:
        down = subprocess.run(
            [DOWN], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        testnet_down = down  # checked by the test through the env's run dir
        (tmp_path / "down.rc").write_text(f"{testnet_down.returncode}\n{down.stdout}{down.stderr}")


def qssh_queue(run: Path, env: dict[str, str], *args: str) -> Any:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "transport.client_cli",
            "-F",
            str(run / "qssh_config"),
            "--json",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode in (0, 4), r.stderr
    return json.loads(r.stdout)


def broadcast_block_reaches_bob_and_charlie(run: Path, env: dict[str, str]) -> None:
    """The README's example: a broadcast block submitted on alice, popped on bob and
    charlie, attributed to alice with alice's id."""
    block = ["block_import", f"block_hash={'ab' * 32}", "block_number=7", "timestamp=7"]
    sent = qssh_queue(run, env, "alice", "submit", *block, "--broadcast")
    deadline = time.monotonic() + 60
    while True:
        views = {v["peer"]: v for v in qssh_queue(run, env, "alice", "peers")}
        if all(views[p]["relayed_total"] == 1 for p in ("bob", "charlie")):
            break
        assert time.monotonic() < deadline, views
        time.sleep(0.2)
    assert views["charlie"]["session_tier"] == 4, str(views["charlie"])  # sealed too
    for name in ("bob", "charlie"):
        got = qssh_queue(run, env, name, "pop")  # block_import comes before entropy shares
        assert got["message"]["block_number"] == 7
        assert (got["origin"], got["origin_id"]) == ("alice", sent["message_id"])
        assert got["submitted_by"] == "peer:alice"


def test_three_validators_answer_tier_and_stop_cleanly(
    testnet: tuple[Path, dict[str, str], str],
) -> None:
    run, env, up_out = testnet
    client = Path(sys.executable).parent / "qssh-queue"  # the real path, not a bare name
    assert f"{client} -F {run}/qssh_config alice tier" in up_out
    for name in ("alice", "bob", "charlie"):
        log = (run / "logs" / f"{name}.log").read_text().splitlines()
        tier = next(m for m in map(log_message, log) if m.startswith("tier "))
        assert f"  {tier}\n" in up_out  # whole, not cut mid-word
    tiers, effective = {}, {}
    for name in ("alice", "bob", "charlie"):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "transport.client_cli",
                "-F",
                str(run / "qssh_config"),
                "--json",
                name,
                "tier",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        view = json.loads(r.stdout)
        tiers[name] = view["node"]["tier"]
        effective[name] = view["tier"]
    assert tiers == {"alice": 2, "bob": 3, "charlie": 4}
    base = int(env["TESTNET_PORT_BASE"])
    for offset, name in enumerate(("alice", "bob", "charlie")):
        log = (run / "logs" / f"{name}.log").read_text()
        assert f"listening 127.0.0.1:{base + offset} " in log
    # qssh-queue seals its channel to charlie with QKD keys: a tier-4 session
    assert effective == {"alice": 2, "bob": 3, "charlie": 4}
    broadcast_block_reaches_bob_and_charlie(run, env)

    down = subprocess.run([DOWN], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    for name in ("alice", "bob", "charlie"):
        log = (run / "logs" / f"{name}.log").read_text().splitlines()
        assert log_message(log[-1]).startswith("stopped in "), log[-5:]
        assert not (run / f"{name}.pid").exists()


def test_a_port_clash_at_up_stops_everything_and_down_succeeds(tmp_path: Path) -> None:
    ssh_base, metrics_base = idle_port_bases()
    env = child_env(
        TESTNET_DIR=str(tmp_path / "run"),
        PYTHON=sys.executable,
        TESTNET_PORT_BASE=str(ssh_base),
        TESTNET_METRICS_BASE=str(metrics_base),
    )
    with socket.socket() as taken:  # charlie's SSH port is someone else's
        taken.bind(("127.0.0.1", ssh_base + 2))
        taken.listen()
        up = subprocess.run([UP], env=env, capture_output=True, text=True, timeout=240, check=False)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "charlie exited" in up.stderr
    run = tmp_path / "run"
    assert not list(run.glob("*.pid")), up.stderr  # bob, alice, simulators stopped too
    for port in (ssh_base, ssh_base + 1):
        assert not is_listening(port)
    down = subprocess.run([DOWN], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
