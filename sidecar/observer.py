"""Hooks the daemon wires to Prometheus; the default does nothing."""

from __future__ import annotations

from sidecar.messages import Mode


class QueueObserver:
    """Subclass and override what you need; every hook must be cheap and never raise."""

    def on_fsync(self, seconds: float, batch_records: int) -> None:
        """One group-commit write+fsync took `seconds` for `batch_records` records."""

    def on_submit(self, mode: Mode, upgraded: bool) -> None: ...

    def on_consume(self, how: str) -> None:
        """A message was consumed for good; `how` is "pop" or "ack"."""

    def on_release(self) -> None: ...

    def on_redelivery(self, count: int) -> None:
        """`count` expired leases returned their messages to the queue."""

    def on_compaction(self, seconds: float, bytes_before: int, bytes_after: int) -> None: ...

    def on_log_bytes(self, size: int) -> None: ...


NULL_OBSERVER = QueueObserver()
