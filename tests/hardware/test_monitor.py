from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from hardware.errors import HealthTestFailure
from hardware.health import HealthTest
from hardware.monitor import CHECK_BYTES, HardwareMonitor, HealthCheckedSource
from hardware.simulators.serial_qrng import Behaviour, SerialQRNGSimulator
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


async def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_a_source_that_goes_bad_in_use_drops_the_tier() -> None:
    with SerialQRNGSimulator("good") as sim:
        monitor = HardwareMonitor(config_for(serial_ports=[qrng(sim.path)], check_interval=60))
        changes: list[TierDecision] = []
        monitor.subscribe(lambda _old, new: changes.append(new))
        await monitor.start()
        try:
            src = monitor.best_quantum_source()
            assert src is not None
            await asyncio.to_thread(src.read, 2048)
            sim.behaviour = Behaviour.STUCK  # the device fails after it was trusted
            failure = None
            for _ in range(50):  # the pty may still hold some good bytes
                try:
                    await asyncio.to_thread(src.read, 4096)
                except HealthTestFailure as exc:
                    failure = exc
                    break
            assert failure is not None
            await wait_until(lambda: len(changes) >= 2)
        finally:
            await monitor.stop()
    assert [int(d.tier) for d in changes] == [3, 2]
    assert any("health test failure" in r for r in changes[1].reasons)


async def test_a_device_in_use_is_judged_by_its_live_tests_not_reopened() -> None:
    with SerialQRNGSimulator("good") as sim:
        monitor = HardwareMonitor(config_for(serial_ports=[qrng(sim.path)], check_interval=0.2))
        await monitor.start()
        src = monitor.best_quantum_source()
        assert src is not None
        try:
            await asyncio.to_thread(src.read, 3000)
            before = monitor.evaluations
            await wait_until(lambda: monitor.evaluations >= before + 1)
            decision = monitor.current
        finally:
            await monitor.stop()
            src.close()
    assert decision is not None
    assert decision.tier is Tier.ENTROPY_ENHANCED
    # the live count (3000 read, plus the short check each evaluation makes), not a
    # fresh 2048-byte sample
    assert (decision.devices[0].bytes_sampled - 3000) % CHECK_BYTES == 0
    assert decision.devices[0].bytes_sampled > 3000


async def test_a_source_in_use_that_read_little_keeps_tier_3_through_periodic_checks() -> None:
    """The testnet's bob: a reader taken at start that reads a few bytes every few
    seconds has read far fewer than `startup_samples` at each check; its startup test
    still stands, so the tier stays 3."""
    with SerialQRNGSimulator("good") as sim:
        seen: list[TierDecision] = []
        monitor = HardwareMonitor(
            config_for(serial_ports=[qrng(sim.path)], check_interval=0.1),
            hotplug=False,
            on_evaluated=seen.append,
        )
        await monitor.start()
        src = monitor.best_quantum_source()
        assert src is not None
        try:
            await asyncio.to_thread(src.read, 64)
            await wait_until(lambda: len(seen) >= 6)
        finally:
            await monitor.stop()
            src.close()
    assert [int(d.tier) for d in seen[:6]] == [3] * 6, [d.reasons for d in seen]
    assert src.test.counts.samples < src.test.params.startup_samples


async def test_a_device_in_use_that_is_unplugged_drops_the_tier_at_the_next_check() -> None:
    sim = SerialQRNGSimulator("good")
    sim.start()
    seen: list[TierDecision] = []
    monitor = HardwareMonitor(
        config_for(serial_ports=[qrng(sim.path)], check_interval=0.1),
        hotplug=False,
        on_evaluated=seen.append,
    )
    await monitor.start()
    src = monitor.best_quantum_source()
    assert src is not None
    try:
        await asyncio.to_thread(src.read, 64)
        sim.stop()  # unplugged while the reader holds it; nobody reads it any more
        await wait_until(lambda: seen[-1].tier is Tier.HARDENED_PQ)
    finally:
        await monitor.stop()
        src.close()
    assert src.failed
    assert any("tier 3 unavailable" in r for r in seen[-1].reasons), seen[-1].reasons
