"""Keep the cyclic garbage collector off queued messages.

A queued message is two tracked objects (its provenance and its message) that hold no
reference cycle and live until consumed, when reference counting frees them. Scanning
them again and again finds nothing, yet a full collection at a million messages scans
two million objects with the event loop stopped (0.4 s and more, measured in
bench/depth.py). So once the queue is deep and enough messages arrived since the last
freeze, the collector runs once over what is not frozen (so no garbage is frozen) and
`gc.freeze()` moves every survivor to the permanent generation, which no collection
visits; each pause is proportional to what arrived since the last one, not to the depth.

Frozen objects that later become cyclic garbage (a closed connection's objects, say)
are not collected while frozen; when the queue has drained below half of what it held
at the freeze, `gc.unfreeze()` hands everything back to the collector.
"""

from __future__ import annotations

import gc
from typing import Final

# arrivals between freezes (each pause is about what arrived since the last one), and
# the depth below which none is needed
FREEZE_EVERY: Final = 25_000


class GcFreezer:
    def __init__(self, every: int = FREEZE_EVERY) -> None:
        self._every = every
        self._arrived = 0
        self._frozen_depth = 0
        self.freezes = 0
        self.unfreezes = 0

    def arrived(self, n: int = 1) -> None:
        self._arrived += n

    def check(self, depth: int) -> None:
        """Call with the current depth after arrivals and consumes; cheap when idle."""
        if self._arrived >= self._every and depth >= self._every:
            self.freeze(depth)
        elif self._frozen_depth and depth * 2 < self._frozen_depth:
            gc.unfreeze()
            self._frozen_depth = 0
            self.unfreezes += 1

    def freeze(self, depth: int, *, collect: bool = True) -> None:
        """Freeze what is tracked now; `collect=False` when nothing of it is garbage
        (just after recovery: a collection would only scan it all once more)."""
        if collect:
            gc.collect()
        gc.freeze()
        self._arrived = 0
        self._frozen_depth = depth
        self.freezes += 1
