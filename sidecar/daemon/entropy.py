"""Tier 3 at work (SPEC §6.1): QRNG output published as ``entropy_share`` messages and
mixed into new keys and the tier-4 nonces.

While the hardware tier is 3 or more, the publisher holds a health-checked reader on
the best local quantum RNG (``HardwareMonitor.best_quantum_source()``) and submits one
``entropy_share`` every ``tiers.entropy.interval`` seconds: sync, priority high,
``device_id`` = the source's path, ``qber_percent`` 0 (a local QRNG has no QBER). The
same reader, behind a lock, feeds the :class:`EntropyMixer` that mixes QRNG bytes with
OS randomness (HKDF) for keys made at start-up and the server's tier-4 nonces.

If the source fails its continuous health test (or times out, or is unplugged), on a
publisher read or on a mixer read (:meth:`EntropyPublisher.mixer_failed`, the mixer's
``on_failure``), publishing and mixing stop at once, with an error line and
``qssh_entropy_source_failures``;
the failed reader stays registered with the monitor, which reports it failed, so the
tier drops. Once the monitor has judged it, the failed reader is closed, so the next evaluation
opens the device afresh (startup test): publishing and mixing resume when a decision
gives tier >= 3 again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

from hardware.errors import HardwareError
from hardware.monitor import HealthCheckedSource
from sidecar import QueueMessage
from sidecar.errors import ErrorCode, SidecarError
from transport.entropy import EntropyMixer

from .config import EntropyPublishing
from .metrics import SidecarMetrics

log = logging.getLogger(__name__)

ENTROPY_TIER = 3


class LockedReader:
    """One health-checked source shared by the publisher and the mixer (one reader at
    a time: the continuous tests see one stream)."""

    def __init__(self, source: HealthCheckedSource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self.failure: Exception | None = None  # the first read that failed, by anyone

    @property
    def path(self) -> str:
        return str(self.source.source.path)

    def read(self, n: int) -> bytes:
        with self._lock:
            try:
                return self.source.read(n)
            except Exception as exc:
                if self.failure is None:
                    self.failure = exc
                raise


class EntropyPublisher:
    def __init__(
        self,
        cfg: EntropyPublishing,
        *,
        instance: str,
        metrics: SidecarMetrics,
        tier: Callable[[], int],
        acquire: Callable[[], HealthCheckedSource | None],
        submit: Callable[[QueueMessage, str], Awaitable[int]],
        mixer: EntropyMixer,
        say: Callable[[str], None],
        on_failure: Callable[[], None],
        evaluations: Callable[[], int],
    ) -> None:
        self.on_failure = on_failure
        self.evaluations = evaluations
        self._failed_at = -1
        self._failed_source: HealthCheckedSource | None = None
        self.cfg = cfg
        self.instance = instance
        self.metrics = metrics
        self.tier = tier
        self.acquire = acquire
        self.submit = submit
        self.mixer = mixer
        self.say = say
        self.reader: LockedReader | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refused: ErrorCode | None = None  # why the last share was not published

    def tier_changed(self) -> None:
        self._wake.set()

    def mixer_failed(self, exc: Exception) -> None:
        """The mixer's ``on_failure``: its QRNG read failed (from any thread).

        Handled as a failed publisher read: the reader is dropped and recorded as the
        failed source and the tier re-evaluated, so tier 3 is not reported on a reader
        nobody mixes from, and the device comes back after a fresh startup test."""
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or loop is running:
            self._reader_failed()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._reader_failed)

    def _reader_failed(self) -> None:
        reader = self.reader
        if reader is not None and reader.failure is not None:
            self._source_failed(reader, reader.failure)

    def _source_failed(self, reader: LockedReader, exc: Exception) -> None:
        self._stop_publishing(exc)
        self._failed_source = reader.source
        self._failed_at = self.evaluations()
        self.on_failure()  # re-evaluate the tier now
        self._wake.set()

    def attach(self) -> None:
        """Take the QRNG reader now if the tier allows, so keys made at start-up mix it."""
        if self.reader is None and self.tier() >= ENTROPY_TIER:
            self._start_publishing()

    @property
    def _await_decision(self) -> bool:
        """After a source failure, wait for the monitor's next evaluation before taking
        another reader (the old decision still lists the failed device as healthy)."""
        return self._failed_at >= 0 and self.evaluations() <= self._failed_at

    async def run(self) -> None:
        """Publish while tier >= 3; bounded waits, cancelled on shutdown."""
        try:
            while True:
                self._release_failed()
                if self.tier() < ENTROPY_TIER or self._await_decision:
                    self._stop_publishing(None)
                    await self._sleep_or_wake(self.cfg.interval or 1.0)
                    continue
                if self.reader is None and not self._start_publishing():
                    await self._sleep_or_wake(self.cfg.interval or 1.0)
                    continue
                if self.cfg.interval > 0:
                    await self._publish_one()
                    await self._sleep_or_wake(self.cfg.interval)
                else:
                    await self._sleep_or_wake(1.0)
        finally:
            self.mixer.set_qrng(None)

    async def _sleep_or_wake(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _release_failed(self) -> None:
        """Once the monitor has judged the failed reader, close it: the next evaluation
        opens the device afresh and runs the startup test (a recovered device can give
        tier 3 again; a stuck one fails again)."""
        if self._failed_source is not None and not self._await_decision:
            source, self._failed_source = self._failed_source, None
            source.close()

    def _start_publishing(self) -> bool:
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        source = self.acquire()
        if source is None:
            return False
        self.reader = LockedReader(source)
        self._refused = None
        self.mixer.set_qrng(self.reader.read, self.reader.path)
        self.metrics.entropy_publishing.set(1 if self.cfg.interval > 0 else 0)
        self.say(
            f"entropy: QRNG {self.reader.path} mixed into new keys and tier-4 nonces; "
            + (
                f"publishing entropy_share every {self.cfg.interval:g}s"
                if self.cfg.interval > 0
                else "entropy_share publishing off"
            )
        )
        return True

    def _stop_publishing(self, error: Exception | None) -> None:
        if self.reader is None:
            return
        path = self.reader.path
        self.reader = None
        self.mixer.set_qrng(None)
        self.metrics.entropy_publishing.set(0)
        if error is not None:
            self.metrics.entropy_failures.inc()
            log.error("entropy: QRNG %s failed (%s); entropy_share publishing stopped", path, error)
        else:
            self.say(f"entropy: tier below {ENTROPY_TIER}; entropy_share publishing stopped")

    async def _publish_one(self) -> None:
        reader = self.reader
        assert reader is not None
        try:
            data = await asyncio.to_thread(reader.read, self.cfg.bytes)
        except HardwareError as exc:
            if self.reader is reader:  # not already handled as the mixer's failure
                self._source_failed(reader, exc)
            return
        msg = QueueMessage.from_json(
            {
                "kind": "entropy_share",
                "device_id": reader.path,
                "entropy": base64.b64encode(data).decode(),
                "qber_percent": 0,
            }
        )
        try:
            await self.submit(msg, f"sidecar:{self.instance} qrng")
        except SidecarError as exc:
            # once per reason until a share goes through: a full queue refuses every
            # interval for as long as it stays full (a peer down long ends there)
            if exc.code is not self._refused:
                self._refused = exc.code
                log.warning(
                    "entropy_share not published: %s; said once until one is published again",
                    exc.message,
                )
            return
        if self._refused is not None:
            self._refused = None
            self.say("entropy_share published again")
        self.metrics.entropy_shares.inc()
