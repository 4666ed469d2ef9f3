"""bench/run_all.py --quick runs end to end and writes results of the documented shape.

No figure is checked against a threshold: timings on a shared VM prove nothing here.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cpu import machine_seconds, own_seconds
from tests.subprocesses import REPO, child_env

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server (Debian package, the Redis baseline) is not installed",
)


@pytest.mark.timeout(900)  # the whole bench in --quick mode: minutes on a busy 2-core machine
def test_run_all_quick_writes_ratios_figures_and_machine(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run_all.py"), "--quick",
         "--out", str(out), "--dir", str(tmp_path)],
        cwd=REPO, env=child_env(),
        capture_output=True, text=True, timeout=840, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]

    result = json.loads((out / "results.json").read_text())
    assert next(iter(result)) == "ratios"
    assert {"ratios", "comparisons", "figures", "machine", "mode"} <= set(result)
    assert result["mode"] == "quick"
    assert set(result["figures"]) == {
        "queue_core",
        "service",
        "node_endpoint",
        "handshake",
        "depth",
        "recovery",
    }
    assert {"nproc", "kernel", "python", "packages", "date"} <= set(result["machine"])
    assert result["machine"]["packages"]["persist-queue"] is not None

    ratios = result["ratios"]
    assert set(ratios) == set(result["comparisons"])
    for prefix in ("queue_", "service_", "node_", "handshake_"):
        assert any(name.startswith(prefix) for name in ratios), prefix
    assert "queue_serial_sync_submit_vs_persistqueue_put" in ratios
    assert "service_sync_16_vs_redis_always_16" in ratios
    assert "handshake_ssh-falcon512_vs_classical" in ratios
    assert "node_ws_16_vs_ssh_16" in ratios
    assert "node_subscription_vs_poll_10ms_latency" in ratios
    assert "queue_sync_submit_16_vs_raw_fdatasync" in ratios
    depth = result["figures"]["depth"]
    assert depth["at_depth"][str(depth["messages"])]["depth"] >= depth["messages"]
    assert depth["compaction_at_depth"]["live"] >= depth["messages"]
    assert depth["recovery"]["restored"] >= depth["messages"]
    rec = result["figures"]["recovery"]
    for shape in ("1x", "3x"):
        assert rec[shape]["after"]["rounds"][0]["restored"] == rec["live"]
        assert f"recovery_{shape}_vs_goal" in ratios
    assert rec["3x"]["log"]["records"] == 3 * rec["live"]
    assert "recovery_peak_rss_vs_filled_queue" in ratios
    tunnel = result["figures"]["service"]["ssh_tunnel"].startswith("OpenSSH")  # sshd installed
    if tunnel:
        assert "service_sync_16_unpipelined_vs_redis_ssh_tunnel" in ratios
    service = result["figures"]["service"]["results"]
    unpipelined = ["qssh_sync_16_unpipelined"]
    if tunnel:
        unpipelined.append("redis_always_16_ssh_tunnel_unpipelined")
    for case in unpipelined:  # the whole machine's CPU per operation, and the rate it bounds
        assert service[case]["machine_cpu_us_per_op"] > 0, case
        assert service[case]["machine_bound_ops_per_s"] > 0, case
    for name, value in ratios.items():
        assert isinstance(value, int | float), name
        assert math.isfinite(value), name
        assert value > 0, name
        row = result["comparisons"][name]
        assert row["ratio"] == value
        assert row["ours_value"] > 0, name
        assert row["baseline_value"] > 0, name

    assert (out / "results.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # the printed table names every comparison's baseline
    for row in result["comparisons"].values():
        assert row["baseline"] in proc.stdout


def test_machine_busy_time_counts_this_process_burning_a_core() -> None:
    machine, own = machine_seconds(), own_seconds()
    deadline = own + 0.5
    while own_seconds() < deadline:  # 0.5 s of CPU, bounded by the CPU clock itself
        sum(range(10_000))
    burnt = own_seconds() - own
    # /proc/stat counts 10 ms ticks: the machine was busy at least as long as we were
    assert machine_seconds() - machine >= burnt - 0.05


def test_keygen_bench_runs_and_covers_every_seeded_algorithm() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "keygen.py"), "--rounds", "1", "--keys", "1"],
        cwd=REPO, env=child_env(),
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["bench"] == "keygen"
    assert {"ssh-falcon512", "ssh-falcon1024", "ssh-mldsa-65", "ssh-sphincssha2128fsimple"} <= set(
        result["algorithms"]
    )
    for figures in result["algorithms"].values():
        assert all(math.isfinite(v) and v > 0 for v in figures.values())


def test_profile_samples_a_real_server_and_draws_its_flame_graph(tmp_path: Path) -> None:
    svg = tmp_path / "flame.svg"
    proc = subprocess.run(
        [
            sys.executable, str(REPO / "bench" / "profile.py"), "--seconds", "2",
            "--dir", str(tmp_path), "--flamegraph", str(svg),
        ],
        cwd=REPO, env=child_env(),
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["submits_per_s"] > 0
    assert result["profile"]["samples"] > 0
    assert any("transport/" in name for name in result["profile"]["inclusive_percent"])
    assert svg.read_text().lstrip().startswith("<?xml")
    assert "<svg" in svg.read_text()
