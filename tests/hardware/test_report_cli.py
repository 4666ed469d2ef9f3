from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hardware.simulators.kme_server import KMESimulator
from hardware.simulators.serial_qrng import SerialQRNGSimulator
from hardware.simulators.tls import ThrowawayPKI
from hardware.tier import Tier
from tests.subprocesses import REPO, child_env
from transport.tiers import TIER_NAMES

ENV = child_env(COLUMNS="200")


def hardware(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", "hardware", *args],
        capture_output=True,
        env=ENV,
        timeout=60,
        cwd=str(REPO),
        check=False,
    )


def write_config(tmp_path: Path, body: str) -> str:
    cfg = tmp_path / "hw.toml"
    cfg.write_text("[hardware]\nuse_udev = false\nchar_devices = []\n" + body)
    return str(cfg)


def kme_toml(pki: ThrowawayPKI, url: str) -> str:
    alice = pki.clients["sae-alice"]
    return (
        f'[hardware.kme]\nurl = "{url}"\nsae_id = "sae-alice"\nslave_sae_id = "sae-bob"\n'
        f'cert = "{alice.cert}"\nkey = "{alice.key}"\nca = "{pki.ca}"\nsimulated = true\n'
    )


def test_json_report_lists_devices_kme_and_tier(tmp_path: Path, pki: ThrowawayPKI) -> None:
    with (
        SerialQRNGSimulator("good") as qrng,
        SerialQRNGSimulator("stuck") as stuck,
        KMESimulator(pki) as kme,
    ):
        body = (
            "serial_ports = [\n"
            f'  {{path = "{qrng.path}", kind = "quantum_local", simulated = true}},\n'
            f'  {{path = "{stuck.path}", kind = "trng", simulated = true}},\n]\n'
        )
        cfg = write_config(tmp_path, body + kme_toml(pki, kme.url))
        proc = hardware("report", "--json", "--sample-bytes", "1536", "--config", cfg)
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["tier"] == 4
    assert out["tier_name"] == "QuantumSecured"
    assert out["simulated"] is True
    good, bad = out["devices"]
    for field in ("kind", "vendor_id", "product_id", "path", "driver", "readable",
                  "bytes_sampled", "rate_bps", "health", "health_counts", "error"):  # fmt: skip
        assert field in good
    assert good["bytes_sampled"] == 1536
    assert good["health"] == "pass"
    assert good["rate_bps"] > 0
    assert bad["health"] == "fail"
    assert bad["health_counts"]["rct_failures"] >= 1
    assert out["kme"]["stored_key_count"] == 1000
    assert out["kme"]["healthy"] is True


def test_table_report_for_people(tmp_path: Path, pki: ThrowawayPKI) -> None:
    with KMESimulator(pki, "no_keys") as kme:
        proc = hardware("report", "--config", write_config(tmp_path, kme_toml(pki, kme.url)))
    assert proc.returncode == 0, proc.stderr.decode()
    text = proc.stdout.decode()
    assert "Tier 2 HardenedPQ" in text
    assert "no stored keys" in text
    assert "no entropy hardware found" in text
    rows = [ln for ln in text.splitlines() if "no entropy hardware found" in ln]
    assert len(rows) == 1  # piped: the row is whole, not wrapped at 80 columns
    assert len(rows[0]) > 80 or rows[0].count("│") == 12


def test_nothing_found_still_exits_zero(tmp_path: Path) -> None:
    proc = hardware("report", "--json", "--config", write_config(tmp_path, ""))
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    assert out["devices"] == []
    assert out["tier"] == 2
    assert out["simulated"] is False


def test_bad_config_is_exit_2_with_a_message(tmp_path: Path) -> None:
    proc = hardware("report", "--config", write_config(tmp_path, "floor = 9\n"))
    assert proc.returncode == 2
    assert b"bad config" in proc.stderr


def test_tier_labels_are_the_names_the_queue_service_prints() -> None:
    assert {int(t): t.label for t in Tier} == TIER_NAMES
