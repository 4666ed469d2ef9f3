"""Keep the tier current: re-probe on udev hotplug events and on a health-check timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pyudev

from hardware.config import HardwareConfig
from hardware.errors import HardwareError, HealthTestFailure, SourceError
from hardware.health import HealthTest
from hardware.probe import Found, evaluate_found
from hardware.reports import DeviceReport, HealthVerdict, SourceKind
from hardware.sources import EntropySource
from hardware.tier import TierDecision

log = logging.getLogger(__name__)

TierListener = Callable[[TierDecision | None, TierDecision], Awaitable[None] | None]
CHECK_BYTES = 64  # read by each evaluation from a device in use, to prove it still answers
HOTPLUG_SUBSYSTEMS = ("usb", "tty", "usbmisc", "qrandom", "misc", "pci")


class HealthCheckedSource:
    """Reads from one source through the continuous SP 800-90B tests.

    After a failure every read raises `HealthTestFailure`: the bytes are never returned.
    `startup` is the verdict of the startup test the device passed when it was chosen
    (SP 800-90B §4.3, on its own sample); it stands until the continuous tests fail.
    """

    def __init__(
        self,
        source: EntropySource,
        test: HealthTest,
        timeout: float = 2.0,
        on_failure: Callable[[], None] | None = None,
        startup: HealthVerdict = HealthVerdict.UNTESTED,
    ) -> None:
        self.source = source
        self.test = test
        self.timeout = timeout
        self.on_failure = on_failure  # called from the reading thread
        self.startup = startup
        self.failed = False
        self.error: str | None = None  # why it failed, when not a health test failure
        self.closed = False
        self._opened = False
        self._lock = threading.Lock()  # one reader at a time: the tests see one stream

    def read(self, n: int) -> bytes:
        with self._lock:
            return self._read(n)

    def _read(self, n: int) -> bytes:
        if self.failed:
            raise HealthTestFailure(
                f"{self.source.path}: {self.error or 'health test failed'} earlier"
            )
        if self.closed:
            raise SourceError(f"{self.source.path}: reader was closed")
        if not self._opened:
            self.source.open()
            self._opened = True
        data = self.source.read(n, self.timeout)
        if not self.test.feed(data):
            self.failed = True
            if self.on_failure is not None:
                self.on_failure()
            c = self.test.counts
            raise HealthTestFailure(
                f"{self.source.path}: health test failed (repetition count {c.rct_failures}, "
                f"adaptive proportion {c.apt_failures})"
            )
        return data

    def check(self, n: int = CHECK_BYTES) -> None:
        """A short read through the continuous tests, at each evaluation: a device that
        was unplugged, stalls or goes bad fails here even if nobody else reads it."""
        if self.failed or self.closed:
            return
        try:
            self.read(n)
        except HealthTestFailure:
            pass  # already marked failed by the read
        except HardwareError as exc:
            self.error = str(exc)
            self.failed = True

    def close(self) -> None:
        if self._opened:
            self.source.close()
            self._opened = False
        self.closed = True

    def describe_into(self, report: DeviceReport) -> None:
        """Fill a probe report from the live tests instead of opening the device again.

        The report is a fresh one from this evaluation's enumeration, so the startup
        verdict must come from here: a reader that has read fewer than
        `startup_samples` bytes since it was chosen is still a tested source.
        """
        counts = self.test.counts
        report.readable = True
        report.bytes_sampled = counts.samples
        report.health_counts = counts.as_dict()
        report.error = self.error
        if self.failed:
            report.health = HealthVerdict.FAIL
        elif counts.samples >= self.test.params.startup_samples:
            report.health = HealthVerdict.PASS
        else:
            report.health = self.startup


class HardwareMonitor:
    def __init__(
        self,
        config: HardwareConfig,
        *,
        hotplug: bool = True,
        on_evaluated: Callable[[TierDecision], None] | None = None,
    ) -> None:
        self.config = config
        self._on_evaluated = on_evaluated
        self._hotplug = hotplug and config.use_udev
        self._current: TierDecision | None = None
        self._found: list[Found] = []
        self._listeners: list[TierListener] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._udev_monitor: Any = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._live: list[HealthCheckedSource] = []
        self.evaluations = 0
        self.hotplug_events = 0

    @property
    def current(self) -> TierDecision | None:
        return self._current

    def subscribe(self, callback: TierListener) -> Callable[[], None]:
        """`callback(old, new)` on every tier change; returns an unsubscribe function."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    async def start(self) -> TierDecision:
        """Evaluate once (so `current` is set), then keep watching in the background."""
        self._event_loop = asyncio.get_running_loop()
        await self._evaluate("startup")
        if self._hotplug:
            self._watch_udev()
        self._task = asyncio.create_task(self._loop(), name="hardware-monitor")
        assert self._current is not None
        return self._current

    async def stop(self) -> None:
        if self._udev_monitor is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._udev_monitor.fileno())
            self._udev_monitor = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def trigger(self) -> None:
        """Re-evaluate soon; safe to call from any thread."""
        loop = self._event_loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def best_quantum_source(self) -> HealthCheckedSource | None:
        """A fresh health-checked reader on the best healthy local quantum RNG, if any."""
        for f in self._found:
            rep = f.report
            if rep.kind is SourceKind.QUANTUM_LOCAL and rep.healthy and f.open_source:
                src = HealthCheckedSource(
                    f.open_source(),
                    HealthTest(self.config.health),
                    self.config.read_timeout,
                    on_failure=self.trigger,
                    startup=rep.health,
                )
                self._live.append(src)
                return src
        return None

    def _watch_udev(self) -> None:
        try:
            mon = pyudev.Monitor.from_netlink(pyudev.Context())
            for sub in HOTPLUG_SUBSYSTEMS:
                mon.filter_by(sub)
            mon.start()
        except OSError as exc:
            log.warning("no udev hotplug events (%s); relying on periodic checks", exc)
            return
        self._udev_monitor = mon
        asyncio.get_running_loop().add_reader(mon.fileno(), self._on_udev)

    def _on_udev(self) -> None:
        mon = self._udev_monitor
        if mon is None:
            return
        for _ in range(64):  # drain what is queued, bounded
            dev = mon.poll(timeout=0)
            if dev is None:
                break
            self.hotplug_events += 1
            log.info("udev %s %s", dev.action, dev.sys_path)
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.check_interval)
                cause = "hotplug"
                await asyncio.sleep(0.2)  # let a burst of udev events settle
            except TimeoutError:
                cause = "periodic health check"
            self._wake.clear()
            try:
                await self._evaluate(cause)
            except Exception:
                log.exception("hardware re-evaluation failed; keeping tier")

    async def _evaluate(self, cause: str) -> None:
        self._live = [s for s in self._live if not s.closed]
        for reader in self._live:
            await asyncio.to_thread(reader.check)
        # a device being read is judged by its continuous tests; opening it again
        # would split its stream between two readers
        in_use = {s.source.path: s.describe_into for s in self._live}
        decision, found = await evaluate_found(self.config, in_use=in_use)
        # judged FAILED by this decision: close and forget them, so the next evaluation
        # opens the device afresh (startup test) whoever saw the failure; a user still
        # holding one gets an error on its next read
        for reader in [s for s in self._live if s.failed]:
            reader.close()
            self._live.remove(reader)
        self.evaluations += 1
        old, self._found = self._current, found
        self._current = decision
        if self._on_evaluated is not None:
            self._on_evaluated(decision)
        if old is None or old.tier != decision.tier:
            log.debug(  # the daemon says it (tier changed ...); here with the cause
                "tier %s -> %d (%s): %s",
                "-" if old is None else int(old.tier),
                decision.tier,
                cause,
                "; ".join(decision.reasons) or "all hardware healthy",
            )
            for cb in list(self._listeners):
                result = cb(old, decision)
                if asyncio.iscoroutine(result):
                    await result
