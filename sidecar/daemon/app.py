"""The running sidecar: starts every part in order and stops them in reverse.

Start: check the machine (data dir, key files, authorized keys) → lock the data dir
→ open and recover the log → probe hardware and decide the tier → make missing keys
(their seeds QRNG-mixed at tier 3) → metrics → SSH listener → node endpoint →
``READY=1``. A configuration error is found before the log is opened: one line,
exit 2, nothing listened.

Stop (SIGTERM/SIGINT): stop accepting, let in-flight requests finish, close the
queue (which writes the async messages to the log with fsync), exit 0 — bounded by
``durability.shutdown_timeout``. SIGHUP reloads authorized keys (with their roles).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sidecar.dedup import Submitted
from sidecar.errors import AsyncMessagesLost, SidecarError
from sidecar.messages import Kind
from transport.entropy import EntropyMixer

from . import keys
from .config import (
    ConfigError,
    DaemonConfig,
    DiskFull,
    check_kme_tls,
    check_readable,
    check_socket_group,
    check_socket_path,
    prepare_data_dir,
)
from .entropy import EntropyPublisher
from .metrics import SidecarMetrics
from .node_endpoint import NodeEndpointServer
from .node_rpc import NodeLease
from .notify import SystemdNotifier
from .relay import Peers
from .wiring import HardwarePart, QueuePart, ServerPart

log = logging.getLogger(__name__)
status = logging.getLogger("sidecar.daemon")

# docs/operations.md lists every exit code
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
EXIT_NO_SPACE = 3  # the data dir's filesystem is full at start
EXIT_ASYNC_LOST = 4  # stopped, but async messages could not be written
# after the flush has waited shutdown_timeout for space, this long for the write itself
CLOSE_GRACE_SECONDS = 5.0
STATUS_PERIOD = 2.0
METRICS_PERIOD = 1.0


class Sidecar:
    def __init__(
        self,
        cfg: DaemonConfig,
        *,
        notifier: SystemdNotifier | None = None,
        salvage: bool = False,
    ) -> None:
        self.cfg = cfg
        self.salvage = salvage
        self.notifier = notifier or SystemdNotifier()
        self.metrics = SidecarMetrics(cfg.instance)
        self.hardware = HardwarePart(cfg, self.metrics, self._on_tier_change)
        self.queue = QueuePart(cfg, self.metrics, self.hardware.tier_info)

        def mixer_failed(exc: Exception) -> None:  # self.entropy is made below
            self.entropy.mixer_failed(exc)

        # a failed mixer read is the publisher's failure too: tier and mixing agree
        self.mixer = EntropyMixer(on_failure=mixer_failed)
        self.server = ServerPart(cfg, self.metrics, self.queue, self.hardware, self.mixer)
        self.entropy = EntropyPublisher(
            cfg.tiers.entropy,
            instance=cfg.instance,
            metrics=self.metrics,
            tier=self.hardware.level,
            acquire=self.hardware.acquire_qrng,
            submit=self.queue.submit_entropy,
            mixer=self.mixer,
            say=self.say,
            on_failure=self.hardware.trigger,
            evaluations=self.hardware.evaluations,
        )
        self.peers = Peers(cfg, self.queue.core, self.hardware.level)
        self.server.peers_view = self.peers.views
        self.node = NodeEndpointServer(self, cfg.node, self._count_node_call)
        self._stop = asyncio.Event()
        self._lock_fd: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_status = ""
        self.node_http_port: int | None = None
        self.ready = False
        self._stopping = False
        self._reload_deferred = False  # a SIGHUP came while starting

    # ---- what the node endpoint needs (node_rpc.NodeBackend) ----------------------

    @property
    def instance(self) -> str:
        return self.cfg.instance

    async def node_submit(
        self,
        message: object,
        *,
        mode: str = "default",
        dedup_id: str | None = None,
        broadcast: bool = False,
    ) -> Submitted:
        return await self.queue.submit_from_node(
            message, mode=mode, dedup_id=dedup_id, broadcast=broadcast
        )

    async def node_pop(self) -> dict[str, Any] | None:
        return await self.queue.pop_for_node()

    async def node_lease(
        self,
        timeout: float,  # noqa: ASYNC109
        kinds: frozenset[Kind] | None = None,
    ) -> NodeLease | None:
        return await self.queue.lease_for_node(timeout, kinds)

    async def node_ack(self, lease_id: int) -> None:
        await self.queue.ack(lease_id)

    async def node_release(self, lease_id: int) -> None:
        await self.queue.release(lease_id)

    async def node_wait_available(
        self,
        timeout: float,  # noqa: ASYNC109
        kinds: frozenset[Kind] | None = None,
    ) -> bool:
        return await self.queue.wait_available(timeout, kinds)

    def node_tier(self) -> dict[str, Any]:
        return self.hardware.tier_info().to_wire()

    def node_health(self) -> dict[str, Any]:
        failed = self.queue.failed()
        return {
            "instance": self.cfg.instance,
            "tier": self.hardware.level(),
            "depth": self.queue.total_depth(),
            "log": "ok" if failed is None and self.queue.q is not None else "failed",
            "log_error": failed,
            "ready": self.ready,
        }

    def node_depth(self) -> int:
        return self.queue.total_depth()

    def node_metrics(self) -> dict[str, Any]:
        return {
            "instance": self.cfg.instance,
            "tier": self.hardware.level(),
            "queue": self.queue.stats(),
            "metrics": self.metrics.snapshot(),
        }

    def _count_node_call(self, method: str) -> None:
        self.metrics.node_requests.labels(method=method).inc()

    # ---- lifecycle -------------------------------------------------------------------

    def say(self, line: str) -> None:
        """A status line for the operator (INFO, logger ``sidecar.daemon``)."""
        status.info(line)

    async def main(self) -> int:
        """Run until SIGTERM/SIGINT; the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        try:
            try:
                await self.start()
            except DiskFull as e:
                print(f"qssh-sidecar: cannot start: {e}", file=sys.stderr, flush=True)
                await self._abort_start()
                return EXIT_NO_SPACE
            except ConfigError as e:
                print(f"qssh-sidecar: {e}", file=sys.stderr, flush=True)
                await self._abort_start()
                return EXIT_CONFIG
            except (OSError, SidecarError) as e:
                full = no_space(e)
                why = "no space left on the device: " if full else ""
                print(f"qssh-sidecar: cannot start: {why}{e}", file=sys.stderr, flush=True)
                await self._abort_start()
                return EXIT_NO_SPACE if full else EXIT_FAILURE
            except Exception as e:
                log.exception("unexpected error while starting")
                print(f"qssh-sidecar: cannot start: {e!r}", file=sys.stderr, flush=True)
                await self._abort_start()
                return EXIT_FAILURE
            await self._stop.wait()
            return await self.shutdown()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.notifier.close()

    async def start(self) -> None:
        cfg = self.cfg
        started = time.monotonic()
        # Everything that can be wrong with the config is found before we listen; a bad
        # key file or authorized_keys before the data dir is made or locked (only read).
        self._check_files()
        host = keys.existing_host_key(cfg.host_key_path, generate=cfg.host_key is None)
        # an authorized_keys file the operator named is theirs: it is read, never written
        named = cfg.authorized_keys is not None
        make_operator = (
            cfg.embedded_defaults and not named
        ) or not cfg.authorized_keys_path.exists()
        if cfg.authorized_keys_path.exists():
            self._load_authorized_keys()
        prepare_data_dir(cfg.data_dir)
        self._lock_data_dir()

        recovery = await self.queue.open(salvage=self.salvage)
        self.say(f"log {self.queue.wal_dir}: {recovery}")

        decision = await self.hardware.start()
        self.say(f"tier {decision}")

        # New keys are made after the probe, so that at tier 3 their seed takes QRNG bytes.
        self.entropy.attach()
        if host is None:
            host = await asyncio.to_thread(
                keys.new_host_key, cfg.host_key_path, instance=cfg.instance, entropy=self.mixer
            )
        self.say(f"host key {cfg.host_key_path}: {host.fingerprint}{host.origin}")
        operator = None
        if make_operator:
            operator = await asyncio.to_thread(keys.ensure_local_operator, cfg, host, self.mixer)
            self._load_authorized_keys()

        if cfg.metrics is not None:
            self.metrics.serve(cfg.metrics)
            self.say(f"metrics http://{cfg.metrics.host}:{self.metrics.bound_port}/metrics")

        bound = await self.server.start(host)
        self.say(f"listening {bound} (instance {cfg.instance})")
        for note in self.server.tier_notes(host.key.get_algorithm()):
            self.say(note)

        await self.node.start_unix(cfg.node_socket_path, cfg.node.socket_group)
        self.say(f"node endpoint unix:{cfg.node_socket_path}")
        if cfg.node.http is not None:
            self.node_http_port = await self.node.start_http(cfg.node.http)
            self.say(f"node endpoint http://{cfg.node.http.host}:{self.node_http_port}/")

        self.say(f"relay to {self.peers.start()}")

        if operator is not None:
            for line in keys.operator_howto(cfg, operator, bound.port):
                self.say(line)

        self._tasks.append(asyncio.create_task(self.entropy.run()))
        self._tasks.append(asyncio.create_task(self.notifier.watchdog_pings()))
        self._tasks.append(asyncio.create_task(self._status_loop()))
        self.ready = True
        self.notifier.ready(self._status_line())
        self.say(f"ready in {time.monotonic() - started:.2f}s")
        if self._reload_deferred:
            self._reload_deferred = False
            self._reload()

    def _load_authorized_keys(self) -> None:
        try:
            self.server.load_authorized_keys(self.cfg.authorized_keys_path)
        except ValueError as e:
            raise ConfigError(f"authorized_keys: {e}") from None

    def _check_files(self) -> None:
        cfg = self.cfg
        if cfg.host_key is not None or cfg.host_key_path.exists():
            check_readable(cfg.host_key_path, "host_key")
        if cfg.authorized_keys is not None:
            check_readable(cfg.authorized_keys_path, "authorized_keys")
        check_socket_group(cfg.node.socket_group)
        check_socket_path(cfg.node_socket_path, cfg.data_dir)
        kme = cfg.hardware.kme
        if kme is not None:
            for setting, path in (("cert", kme.cert), ("key", kme.key), ("ca", kme.ca)):
                check_readable(Path(path), f"hardware.kme.{setting}")
            check_kme_tls(kme.cert, kme.key, kme.ca)
        for n, peer in enumerate(cfg.peers):
            keys.check_peer_keys(peer, f"peers[{n}]")

    def _lock_data_dir(self) -> None:
        path = self.cfg.data_dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"data_dir: {self.cfg.data_dir} is in use by another qssh-sidecar "
                "(stop it or choose another --data-dir)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    async def shutdown(self) -> int:
        """Stop accepting, drain, flush async messages with fsync; the exit code."""
        timeout = self.cfg.durability.shutdown_timeout
        began = time.monotonic()
        self._stopping = True
        self.notifier.stopping(f"stopping; depth {self.queue.total_depth()}")
        self.say("stopping: no new connections, finishing in-flight requests")
        self.ready = False
        code = EXIT_OK
        for task in self._tasks:
            task.cancel()
        await self.peers.stop()
        try:
            async with asyncio.timeout(timeout):
                await self.node.close(drain=timeout / 2)
                await self.server.stop(drain=timeout / 2)
        except TimeoutError:
            log.warning("in-flight requests did not finish within %.1fs; closing anyway", timeout)
        try:
            async with asyncio.timeout(timeout + CLOSE_GRACE_SECONDS):
                flushed = await self.queue.close(wait_for_space=timeout)
            self.say(f"log closed: {flushed}")
        except AsyncMessagesLost as e:
            print(
                f"qssh-sidecar: {e.lost} async messages lost: the log could not be written "
                f"(waited {timeout:g}s for space): {e.message}",
                file=sys.stderr,
                flush=True,
            )
            code = EXIT_ASYNC_LOST
        except (TimeoutError, OSError, SidecarError) as e:
            print(f"qssh-sidecar: closing the log failed: {e}", file=sys.stderr, flush=True)
            code = EXIT_FAILURE
        await self.hardware.stop()
        self.metrics.stop()
        self._unlock()
        self.say(f"stopped in {time.monotonic() - began:.2f}s")
        return code

    async def _abort_start(self) -> None:
        with contextlib.suppress(Exception):
            await self.peers.stop()
        with contextlib.suppress(Exception):
            await self.node.close(drain=0)
        with contextlib.suppress(Exception):
            await self.server.stop(drain=0)
        with contextlib.suppress(Exception):
            await self.queue.close()
        with contextlib.suppress(Exception):
            await self.hardware.stop()
        self.metrics.stop()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _reload(self) -> None:
        # READY=1 only when ready: not while starting (the reload is done once ready)
        # nor once STOPPING=1 was sent (ignored)
        if self._stopping:
            log.warning("SIGHUP while stopping: ignored")
            return
        if not self.ready:
            if not self._reload_deferred:
                log.warning("SIGHUP while starting: keys are reloaded once ready")
            self._reload_deferred = True
            return
        self.notifier.reloading()
        try:
            n = self.server.load_authorized_keys(self.cfg.authorized_keys_path)
            if n:
                self.say(f"reloaded {self.cfg.authorized_keys_path}: {n} keys")
            else:  # every line skipped (each said why) or none: every login is refused
                log.warning(
                    "reloaded %s: 0 keys: every login is refused until keys are added",
                    self.cfg.authorized_keys_path,
                )
        except (OSError, ValueError) as e:
            log.error("reload failed, keeping the previous keys: %s", e)
        self.notifier.notify("READY=1", f"STATUS={self._status_line()}")

    # ---- periodic status --------------------------------------------------------------

    def _status_line(self) -> str:
        return (
            f"depth {self.queue.total_depth()} ({self.queue.depth_summary()}); "
            f"tier {self.hardware.level()} {self.hardware.name()}; "
            f"connections {self.server.connections() or 0}"
        )

    async def _status_loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(METRICS_PERIOD)
            ticks += 1
            failed = self.queue.failed()
            if failed is not None:
                # fsyncgate: the queue refuses work for good; exit non-zero so the
                # service manager restarts us and recovery reads what is on disk.
                log.error("the log failed, stopping for a restart: %s", failed)
                self.notifier.status(f"log failed: {failed}")
                self._stop.set()
                return
            self.metrics.refresh(
                self.queue.depth_by_priority(),
                self.queue.leased(),
                self.queue.log_bytes(),
                self.server.connections(),
                self.queue.queue_bytes(),
            )
            self.peers.observe(self.metrics)
            self.server.observe(self.metrics)
            if ticks % int(STATUS_PERIOD / METRICS_PERIOD) == 0:
                line = self._status_line()
                if line != self._last_status:
                    self.notifier.status(line)
                    self._last_status = line

    def _on_tier_change(self, old: int | None, new: int, reason: str) -> None:
        line = f"tier changed {old} -> {new}: {reason}"
        if old is not None and new < old:  # a lost QKD link or QRNG: as a failed QRNG is
            status.warning(line)
        else:
            self.say(line)
        self.server.tier_changed()
        self.entropy.tier_changed()
        self.node.tier_changed({**self.hardware.tier_info().to_wire(), "previous": old})
        self.notifier.status(self._status_line())


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` or what caused it is a full filesystem (ENOSPC, EDQUOT)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
