"""The part of the queue core's API the service uses (SPEC §4), as a Protocol.

The service is typed against this, not against the core's classes, so a test or the
daemon can hand in anything shaped like ``sidecar.QppValidatorQueue``.
"""

from __future__ import annotations

from typing import Any, Protocol


class MessageLike(Protocol):
    def to_json(self) -> Any: ...


class ProvenanceLike(Protocol):
    """``QueueMessageWithProvenance``: the message and what the queue knows of it."""

    @property
    def message(self) -> Any: ...
    @property
    def message_id(self) -> int: ...


class ConsumableLike(Protocol):
    def consume(self) -> Any: ...


class LeaseLike(Protocol):
    @property
    def lease_id(self) -> Any: ...
    @property
    def item(self) -> Any: ...
    @property
    def deadline(self) -> float: ...


class QueuePort(Protocol):
    async def submit(
        self, msg: Any, *, submitted_by: str, mode: Any = None, upgraded: bool = False
    ) -> Any: ...
    async def pop(self) -> Any: ...
    async def lease(self, timeout: float) -> Any: ...  # noqa: ASYNC109 (core's API)
    async def ack(self, lease_or_id: Any) -> Any: ...
    async def release(self, lease_or_id: Any) -> Any: ...
    async def wait_available(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109
    def depth(self) -> Any: ...
    def stats(self) -> Any: ...
