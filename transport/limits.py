"""Limits of the queue service, and the per-connection submit rate bucket."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sidecar.errors import Unavailable
from transport.admission import AdmissionLimits


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """What one peer may cost the server. Over a limit: an error reply, never a crash.

    ``submits_per_second`` is a token bucket per connection with ``submit_burst``
    tokens; 0 disables it. Frames over ``max_frame_bytes`` close the channel (the
    stream cannot be resynchronised); the others answer ``unavailable``/``bad_request``.
    ``max_connections`` caps authenticated connections; ``admission`` holds the rules
    for connections not yet authenticated (``transport.admission``).
    """

    max_frame_bytes: int = 2 * 1024 * 1024
    max_in_flight_per_channel: int = 256
    max_connections: int = 64
    max_channels_per_connection: int = 8
    submits_per_second: float = 0.0
    submit_burst: int = 10_000
    max_batch: int = 1000
    max_subscription_credit: int = 10_000
    max_subscriptions_per_channel: int = 16
    max_waiting_leases_per_connection: int = 64
    max_lease_seconds: float = 3600.0
    max_wait_seconds: float = 300.0
    drain_seconds: float = 10.0
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)

    def __post_init__(self) -> None:
        if self.max_frame_bytes < 1024:
            raise ValueError("max_frame_bytes must be at least 1024")
        if self.max_in_flight_per_channel < 1 or self.max_connections < 1:
            raise ValueError("max_in_flight_per_channel and max_connections must be >= 1")
        if self.submits_per_second < 0 or self.submit_burst < 1:
            raise ValueError("submits_per_second must be >= 0 and submit_burst >= 1")

    def to_wire(self) -> dict[str, float | int]:
        return {
            "max_frame_bytes": self.max_frame_bytes,
            "max_in_flight_per_channel": self.max_in_flight_per_channel,
            "max_batch": self.max_batch,
            "max_subscription_credit": self.max_subscription_credit,
            "max_subscriptions_per_channel": self.max_subscriptions_per_channel,
            "max_waiting_leases_per_connection": self.max_waiting_leases_per_connection,
            "submits_per_second": self.submits_per_second,
        }


class SubmitBucket:
    """Token bucket: ``take(n)`` is true when n submits fit in the rate now."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self, n: int = 1) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < n:
            return False
        self._tokens -= n
        return True


class WaitingLeases:
    """``lease`` requests with ``wait`` > 0 now waiting on one connection, capped by
    ``max_waiting_leases_per_connection`` (over it: ``unavailable`` at once)."""

    def __init__(self, limits: ServiceLimits) -> None:
        self.limit = limits.max_waiting_leases_per_connection
        self.now = 0

    @contextmanager
    def one(self) -> Iterator[None]:
        if self.now >= self.limit:
            raise Unavailable(
                f"too many lease requests waiting on this connection (limit {self.limit}); "
                "subscribe with credit instead of many waiting leases"
            )
        self.now += 1
        try:
            yield
        finally:
            self.now -= 1
