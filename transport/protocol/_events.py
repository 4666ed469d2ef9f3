"""The events a server pushes on a ``qssh-queue`` channel (``{"event": name, ...}``).

The one list of their names: the server sends them and the client dispatches on them
by these constants, so the two sides cannot drift apart. ``docs/protocol.md`` has the
fields of each.
"""

from __future__ import annotations

from enum import StrEnum


class EventName(StrEnum):
    DELIVERY = "delivery"  # a leased message for a subscription
    SUBSCRIPTION_ENDED = "subscription_ended"  # a subscription stopped, with an error
    TIER_CHANGED = "tier_changed"  # the channel's effective tier moved
    QKD_SEALED = "qkd_sealed"  # tier-4 sealing is on from this frame
    SESSION_CLOSED = "session_closed"  # the server ends the channel, with a reason
