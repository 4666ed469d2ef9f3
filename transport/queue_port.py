"""The part of the queue core's API the service uses (SPEC §4), as a Protocol.

The service is typed against this, not against ``sidecar.queue``: the daemon hands in
its wrapper (``sidecar.daemon.wiring.QueuePart``), a test the core queue itself. The
types are the core's public ones, so mypy checks the seam.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from sidecar.dedup import Submitted
from sidecar.handles import NoClone
from sidecar.messages import Kind, Mode, QueueMessage, QueueMessageWithProvenance
from sidecar.state import Lease


class QueuePort(Protocol):
    async def submit(
        self,
        msg: QueueMessage,
        *,
        submitted_by: str,
        mode: Mode,
        broadcast: bool = False,
        upgraded: bool = False,
    ) -> int: ...
    async def submit_once(
        self,
        msg: QueueMessage,
        *,
        submitted_by: str,
        dedup_id: str,
        mode: Mode,
        broadcast: bool = False,
        upgraded: bool = False,
        origin: tuple[str, int] | None = None,
    ) -> Submitted: ...
    async def relay_watermark(self, peer: str, watermark: int) -> None: ...
    def relay_floor(self, peer: str) -> int | None: ...
    def relay_keys_full(self, peer: str) -> bool: ...
    async def pop(self) -> NoClone[QueueMessageWithProvenance] | None: ...
    async def lease(
        self,
        timeout: float,  # noqa: ASYNC109 (core's API)
        kinds: Collection[Kind] | None = None,
    ) -> Lease | None: ...
    async def ack(self, lease_or_id: Lease | int) -> None: ...
    async def release(self, lease_or_id: Lease | int) -> None: ...
    async def wait_available(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        kinds: Collection[Kind] | None = None,
    ) -> bool: ...
    def depth(self) -> dict[str, int]: ...
    def stats(self) -> dict[str, Any]: ...


async def store(
    queue: QueuePort,
    msg: QueueMessage,
    *,
    submitted_by: str,
    mode: Mode,
    upgraded: bool,
    dedup_id: str | None,
    broadcast: bool,
    origin: tuple[str, int] | None = None,
) -> Submitted:
    """Hand an admitted message to the queue: every submit path ends here, so a
    ``dedup_id`` (idempotent submit) and ``broadcast`` mean the same on each."""
    if dedup_id is None:
        if origin is not None:
            raise ValueError("a relayed message is always stored with a dedup_id")
        message_id = await queue.submit(
            msg, submitted_by=submitted_by, mode=mode, broadcast=broadcast, upgraded=upgraded
        )
        return Submitted(message_id, False)
    return await queue.submit_once(
        msg,
        submitted_by=submitted_by,
        dedup_id=dedup_id,
        mode=mode,
        broadcast=broadcast,
        upgraded=upgraded,
        origin=origin,
    )
