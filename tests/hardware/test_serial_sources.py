from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from hardware.errors import SourceDisconnected, SourceTimeout
from hardware.probe import evaluate
from hardware.reports import HealthVerdict
from hardware.simulators.remote_qrng import RemoteQRNGSimulator
from hardware.simulators.serial_qrng import SerialQRNGSimulator
from hardware.sources import SerialSource
from hardware.tier import Tier
from tests.hardware.conftest import config_for
from tests.subprocesses import REPO, child_env


def qrng_port(path: str, **extra: object) -> dict[str, object]:
    port: dict[str, object] = {"path": path, "kind": "quantum_local", "simulated": True,
                               "model": "simulated QRNG"}  # fmt: skip
    port.update(extra)
    return port


async def test_good_simulated_qrng_gives_tier_3_flagged_simulated() -> None:
    with SerialQRNGSimulator("good") as sim:
        d = await evaluate(config_for(serial_ports=[qrng_port(sim.path)]))
    assert d.tier is Tier.ENTROPY_ENHANCED
    assert d.simulated
    assert d.devices[0].health is HealthVerdict.PASS
    assert d.devices[0].bytes_sampled == 2048


@pytest.mark.parametrize("behaviour", ["stuck", "biased"])
async def test_unhealthy_output_is_a_health_failure_not_tier_3(behaviour: str) -> None:
    with SerialQRNGSimulator(behaviour) as sim:
        d = await evaluate(config_for(serial_ports=[qrng_port(sim.path)]))
    assert d.tier is Tier.HARDENED_PQ
    assert d.devices[0].health is HealthVerdict.FAIL
    assert any("health test failure" in r for r in d.reasons)


async def test_slow_source_below_expected_rate_is_not_tier_3() -> None:
    # the simulator cannot exceed ~2000 B/s, the device claims 200 kB/s
    with SerialQRNGSimulator("slow", slow_rate_bps=2000) as sim:
        cfg = config_for(
            serial_ports=[qrng_port(sim.path, expected_rate_bps=200_000)],
            sample_bytes=256,
            health={"startup_samples": 256},
            read_timeout=3.0,
        )
        d = await evaluate(cfg)
    assert d.tier is Tier.HARDENED_PQ
    assert d.devices[0].rate_ok is False
    assert any("below expected" in r for r in d.reasons)


@pytest.mark.parametrize(
    ("behaviour", "error"), [("stall", "of 2048 bytes"), ("disconnect", "disconnected")]
)
async def test_stall_and_disconnect_are_reported_not_hung(behaviour: str, error: str) -> None:
    with SerialQRNGSimulator(behaviour, cut_after=700) as sim:
        d = await evaluate(config_for(serial_ports=[qrng_port(sim.path)], read_timeout=1.0))
    dev = d.devices[0]
    assert d.tier is Tier.HARDENED_PQ
    assert dev.error is not None
    assert error in dev.error
    assert any(error in r for r in d.reasons)


def test_stall_read_raises_timeout_with_partial_count() -> None:
    sim = SerialQRNGSimulator("stall", cut_after=300)
    src = SerialSource(sim.path)
    src.open()  # before the simulator sends: pyserial flushes input on open
    sim.start()
    try:
        with pytest.raises(SourceTimeout) as info:
            src.read(1000, 1.0)
    finally:
        src.close()
        sim.stop()
    assert info.value.received == 300


def test_disconnect_mid_read_raises_disconnected() -> None:
    with SerialQRNGSimulator("disconnect", cut_after=300) as sim:
        src = SerialSource(sim.path)
        src.open()
        try:
            with pytest.raises(SourceDisconnected):
                src.read(1000, 5.0)
        finally:
            src.close()


def test_dtr_gated_device_streams_only_after_dtr() -> None:
    with SerialQRNGSimulator("dtr") as sim:
        silent = SerialSource(sim.path, "none")
        silent.open()
        try:
            with pytest.raises(SourceTimeout) as info:
                silent.read(16, 0.3)
            assert info.value.received == 0
        finally:
            silent.close()
        gated = SerialSource(sim.path, "dtr")
        gated.open()
        try:
            assert len(gated.read(1024, 2.0)) == 1024
        finally:
            gated.close()


def test_onerng_handshake_starts_and_stops_the_stream() -> None:
    with SerialQRNGSimulator("onerng") as sim:
        src = SerialSource(sim.path, "onerng")
        src.open()
        assert len(src.read(1024, 2.0)) == 1024
        src.close()
        for _ in range(50):  # the simulator reads the stop command asynchronously
            if not sim.streaming:
                break
            time.sleep(0.02)
    assert sim.commands[:2] == [b"cmd0\n", b"cmdO\n"]
    assert b"cmdo\n" in sim.commands
    assert not sim.streaming


def test_permission_denied_is_reported_per_device_not_a_crash(tmp_path: os.PathLike[str]) -> None:
    with SerialQRNGSimulator("permission") as sim, SerialQRNGSimulator("good") as good:
        cfg = tmp_path / "hw.toml"  # type: ignore[operator]
        cfg.write_text(
            "[hardware]\nuse_udev = false\nchar_devices = []\nsample_bytes = 1024\n"
            f'serial_ports = [{{path = "{sim.path}", kind = "quantum_local", simulated = true}},\n'
            f'  {{path = "{good.path}", kind = "trng", simulated = true}}]\n'
        )
        os.chmod(tmp_path, 0o755)
        os.chmod(cfg, 0o644)
        env = child_env()
        # root ignores file modes: drop the override capabilities so the kernel refuses
        prefix = []
        if os.geteuid() == 0:
            prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
            probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
            if probe.returncode != 0:
                pytest.skip("root without CAP_SETPCAP: cannot make the kernel refuse an open")
        cmd = [
            sys.executable,
            "-m",
            "sidecar.cli",
            "hardware",
            "report",
            "--json",
            "--config",
            str(cfg),
        ]
        proc = subprocess.run(
            prefix + cmd, capture_output=True, env=env, timeout=60, cwd=str(REPO), check=False
        )
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    denied = next(d for d in out["devices"] if d["path"] == sim.path)
    assert denied["readable"] is False
    assert "permission denied" in denied["error"]
    other = next(d for d in out["devices"] if d["path"] == good.path)
    assert other["health"] == "pass"
    assert out["tier"] == 2


@pytest.mark.parametrize(
    ("behaviour", "handshake", "tier"),
    [("dtr", "dtr", Tier.ENTROPY_ENHANCED), ("dtr", "none", Tier.HARDENED_PQ),
     ("onerng", "onerng", Tier.ENTROPY_ENHANCED), ("onerng", "none", Tier.HARDENED_PQ)],
)  # fmt: skip
async def test_handshake_devices_need_their_handshake(
    behaviour: str, handshake: str, tier: Tier
) -> None:
    with SerialQRNGSimulator(behaviour) as sim:
        cfg = config_for(serial_ports=[qrng_port(sim.path, handshake=handshake)], read_timeout=0.5)
        d = await evaluate(cfg)
    assert d.tier is tier
    if tier is Tier.HARDENED_PQ:
        assert any("0 of 2048 bytes" in r for r in d.reasons)


async def test_remote_endpoint_is_quantum_remote_and_not_tier_3() -> None:
    with RemoteQRNGSimulator() as remote:
        cfg = config_for(remote_endpoints=[{"name": "lab QRNG", "url": remote.url}])
        d = await evaluate(cfg)
    (dev,) = d.devices
    assert dev.kind.value == "quantum_remote"
    assert dev.health is HealthVerdict.PASS
    assert dev.bytes_sampled == 2048
    assert d.tier is Tier.HARDENED_PQ


async def test_stuck_remote_endpoint_fails_health() -> None:
    with RemoteQRNGSimulator("stuck") as remote:
        d = await evaluate(config_for(remote_endpoints=[{"name": "r", "url": remote.url}]))
    assert d.devices[0].health is HealthVerdict.FAIL
