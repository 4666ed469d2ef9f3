"""Small builders shared by the core tests."""

from __future__ import annotations

from sidecar import QueueMessage


def block(n: int) -> QueueMessage:
    return QueueMessage.create(
        "block_import", block_hash=n.to_bytes(32, "big"), block_number=n, timestamp=n
    )


def vote(n: int) -> QueueMessage:
    return QueueMessage.create(
        "vote", validator=f"v{n}", block_hash=n.to_bytes(32, "big"), signature=b"s"
    )


def tx(n: int, size: int = 16) -> QueueMessage:
    return QueueMessage.create("transaction", tx_hash=n.to_bytes(32, "big"), tx_data=bytes(size))


def gossip(n: int) -> QueueMessage:
    return QueueMessage.create("gossip", topic=f"t{n}", data=n.to_bytes(4, "big"))


def telemetry(n: int) -> QueueMessage:
    return QueueMessage.create("telemetry", name="cpu", value=n)


class ManualClock:
    """A clock for the queue shell (``clock=`` / ``wall_clock=``) that moves only when
    told to, so lease expiry and dedup windows are tested without sleeping."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
