"""Tier 3: a QRNG failure seen by the mixer (not the publisher) is handled like the
publisher's own: the reader is dropped and recorded as failed, the tier re-evaluated,
and mixing resumes once the device is healthy again (a fresh startup test)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from hardware.errors import HardwareError, SourceTimeout
from hardware.health import HealthTest
from hardware.monitor import HardwareMonitor, HealthCheckedSource
from hardware.reports import HealthVerdict
from hardware.simulators.serial_qrng import Behaviour, SerialQRNGSimulator
from hardware.tier import Tier
from sidecar import QueueMessage
from sidecar.daemon.app import Sidecar
from sidecar.daemon.config import DaemonConfig, EntropyPublishing
from sidecar.daemon.entropy import EntropyPublisher
from sidecar.daemon.metrics import SidecarMetrics
from tests.hardware.conftest import config_for
from transport.entropy import EntropyMixer


class FlakySource:
    """A healthy QRNG that misses one read deadline when told (a transient stall)."""

    path = "/dev/fake-qrng"

    def __init__(self) -> None:
        self.stall_next = False
        self.closed = 0

    def open(self) -> None:
        pass

    def read(self, n: int, timeout: float) -> bytes:
        if self.stall_next:
            self.stall_next = False
            raise SourceTimeout(f"{self.path}: 0 of {n} bytes", 0)
        return os.urandom(n)

    def describe(self) -> dict[str, object]:
        return {}

    def close(self) -> None:
        self.closed += 1


def publisher(
    mixer: EntropyMixer,
    tier: Callable[[], int],
    acquire: Callable[[], HealthCheckedSource | None],
    on_failure: Callable[[], None],
    evaluations: Callable[[], int],
    interval: float = 0.05,
) -> EntropyPublisher:
    async def submit(msg: QueueMessage, who: str) -> int:
        return 1

    return EntropyPublisher(
        EntropyPublishing(interval=interval, bytes=64), instance="t",
        metrics=SidecarMetrics("t"), tier=tier, acquire=acquire, submit=submit, mixer=mixer,
        say=lambda s: None, on_failure=on_failure, evaluations=evaluations,
    )  # fmt: skip


async def wait_until(pred: Callable[[], bool], seconds: float = 8.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if pred():
            return True
        await asyncio.sleep(0.05)
    return False


def test_the_daemon_wires_its_mixers_failures_to_the_entropy_publisher(tmp_path: Path) -> None:
    sidecar = Sidecar(DaemonConfig(data_dir=tmp_path, metrics=None))
    assert sidecar.mixer._on_failure is not None
    seen: list[Exception] = []
    sidecar.entropy.mixer_failed = seen.append  # type: ignore[method-assign]
    boom = SourceTimeout("stall", 0)
    sidecar.mixer._on_failure(boom)
    assert seen == [boom]


async def test_a_transient_stall_in_the_mixer_stops_the_reader_and_mixing_resumes() -> None:
    raw = FlakySource()
    sources: list[HealthCheckedSource] = []
    evaluations = [0]
    triggered: list[int] = []

    def acquire() -> HealthCheckedSource:
        sources.append(HealthCheckedSource(raw, HealthTest(), 1.0, startup=HealthVerdict.PASS))
        return sources[-1]

    mixer = EntropyMixer(on_failure=lambda e: pub.mixer_failed(e))  # noqa: PLW0108 (pub: below)  # as the daemon wires it
    pub = publisher(mixer, lambda: 3, acquire, lambda: triggered.append(1), lambda: evaluations[0])
    pub._start_publishing()
    assert mixer.has_qrng
    raw.stall_next = True
    await asyncio.to_thread(mixer.random_bytes, 32, "tier4 server nonce")  # fails in a thread
    assert await wait_until(lambda: pub.reader is None)  # handled on the loop, like a publish
    assert triggered == [1]
    assert mixer.qrng_failures == 1
    assert not mixer.has_qrng
    assert pub._failed_source is sources[0]
    task = asyncio.create_task(pub.run())
    try:
        evaluations[0] += 1  # the monitor's next decision: the device is fine again
        pub.tier_changed()
        assert await wait_until(lambda: mixer.has_qrng)
        before = mixer.mixed
        await asyncio.to_thread(mixer.random_bytes, 32, "tier4 server nonce")
        assert mixer.mixed == before + 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(sources) == 2  # a fresh reader
    assert sources[0].closed  # the old one closed


async def test_a_health_failure_seen_by_the_mixer_lets_the_recovered_device_back() -> None:
    """The failure is seen only on the mixer's read; once the device recovers, a fresh
    reader passes its startup test and tier 3 (and mixing) come back."""
    with SerialQRNGSimulator("good") as sim:
        port = {"path": sim.path, "kind": "quantum_local", "simulated": True}
        monitor = HardwareMonitor(
            config_for(serial_ports=[port], check_interval=0.1), hotplug=False
        )
        await monitor.start()
        mixer = EntropyMixer(on_failure=lambda e: pub.mixer_failed(e))  # noqa: PLW0108 (pub: below)
        pub = publisher(mixer, lambda: int(monitor.current.tier), monitor.best_quantum_source,
                        monitor.trigger, lambda: monitor.evaluations, interval=60.0)  # fmt: skip
        monitor.subscribe(lambda old, new: pub.tier_changed())  # as the daemon does
        task = asyncio.create_task(pub.run())
        try:
            assert await wait_until(lambda: mixer.has_qrng)
            first = pub.reader
            sim.behaviour = Behaviour.STUCK
            for _ in range(3000):  # drain good bytes from the pty; then the read fails
                if mixer.qrng_failures:
                    break
                await asyncio.to_thread(mixer.random_bytes, 32, "tier4 server nonce")
            assert mixer.qrng_failures == 1
            assert await wait_until(lambda: monitor.current.tier is Tier.HARDENED_PQ)
            sim.behaviour = Behaviour.GOOD  # the device recovers
            assert await wait_until(lambda: monitor.current.tier is Tier.ENTROPY_ENHANCED)
            assert await wait_until(lambda: mixer.has_qrng)
            assert first is not None
            assert pub.reader is not first
            assert first.source.closed
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await monitor.stop()
            for s in monitor._live:
                s.close()


async def test_the_monitor_closes_and_drops_a_reader_it_judged_failed() -> None:
    """Whoever saw the failure (here a bare reader nobody re-reads), the evaluation that
    judges it failed closes it, so the next one re-tests the device from scratch."""
    with SerialQRNGSimulator("good") as sim:
        port = {"path": sim.path, "kind": "quantum_local", "simulated": True}
        monitor = HardwareMonitor(
            config_for(serial_ports=[port], check_interval=0.1), hotplug=False
        )
        await monitor.start()
        try:
            src = monitor.best_quantum_source()
            assert src is not None
            await asyncio.to_thread(src.read, 32)
            sim.behaviour = Behaviour.STUCK
            for _ in range(3000):  # drain good bytes from the pty; then the tests fail
                if src.failed:
                    break
                with contextlib.suppress(HardwareError):
                    await asyncio.to_thread(src.read, 32)
            assert src.failed
            assert await wait_until(lambda: monitor.current.tier is Tier.HARDENED_PQ)
            assert src.closed
            assert src not in monitor._live
            sim.behaviour = Behaviour.GOOD
            assert await wait_until(lambda: monitor.current.tier is Tier.ENTROPY_ENHANCED)
        finally:
            await monitor.stop()
            for s in monitor._live:
                s.close()
