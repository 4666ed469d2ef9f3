from __future__ import annotations

import asyncio

import pytest

from hardware.errors import HealthTestFailure
from hardware.health import HealthTest
from hardware.monitor import HardwareMonitor, HealthCheckedSource
from hardware.simulators.serial_qrng import SerialQRNGSimulator
from hardware.sources import SerialSource
from hardware.tier import Tier, TierDecision
from tests.hardware.conftest import config_for


def qrng(path: str) -> dict[str, object]:
    return {"path": path, "kind": "quantum_local", "simulated": True}


async def test_periodic_check_lowers_the_tier_when_the_qrng_goes_away() -> None:
    sim = SerialQRNGSimulator("good")
    sim.start()
    monitor = HardwareMonitor(config_for(serial_ports=[qrng(sim.path)], check_interval=0.2))
    changes: list[tuple[int | None, int, tuple[str, ...]]] = []

    async def on_change(old: TierDecision | None, new: TierDecision) -> None:
        changes.append((None if old is None else int(old.tier), int(new.tier), new.reasons))

    monitor.subscribe(on_change)
    try:
        first = await monitor.start()
        assert first.tier is Tier.ENTROPY_ENHANCED
        sim.stop()  # unplugged: the pty is gone
        for _ in range(100):  # at most 10 s
            if len(changes) >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        await monitor.stop()
    assert [(old, new) for old, new, _ in changes] == [(None, 3), (3, 2)]
    assert any(r.startswith("tier 3 unavailable") for r in changes[1][2])
    assert monitor.current is not None
    assert monitor.current.tier is Tier.HARDENED_PQ


async def test_unsubscribed_listener_hears_nothing() -> None:
    monitor = HardwareMonitor(config_for(check_interval=60))
    heard: list[TierDecision] = []
    unsubscribe = monitor.subscribe(lambda _old, new: heard.append(new))
    unsubscribe()
    await monitor.start()
    await monitor.stop()
    assert heard == []
    assert monitor.current is not None
    assert monitor.current.tier is Tier.HARDENED_PQ


async def test_best_quantum_source_reads_health_checked_bytes() -> None:
    with SerialQRNGSimulator("good") as sim:
        monitor = HardwareMonitor(config_for(serial_ports=[qrng(sim.path)]), hotplug=False)
        await monitor.start()
        try:
            src = monitor.best_quantum_source()
            assert src is not None
            data = await asyncio.to_thread(src.read, 4096)
            src.close()
        finally:
            await monitor.stop()
    assert len(data) == 4096
    assert src.test.counts.samples == 4096


async def test_no_quantum_source_without_healthy_quantum_hardware() -> None:
    with SerialQRNGSimulator("stuck") as sim:
        monitor = HardwareMonitor(config_for(serial_ports=[qrng(sim.path)]), hotplug=False)
        await monitor.start()
        await monitor.stop()
    assert monitor.best_quantum_source() is None


def test_health_checked_source_refuses_a_stream_that_goes_stuck() -> None:
    with SerialQRNGSimulator("stuck") as sim:
        src = HealthCheckedSource(SerialSource(sim.path), HealthTest(), timeout=2.0)
        try:
            with pytest.raises(HealthTestFailure):
                src.read(1024)
            with pytest.raises(HealthTestFailure):
                src.read(16)  # stays failed: never hands out bytes again
        finally:
            src.close()
    assert src.failed
