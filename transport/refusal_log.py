"""Refusals logged at a bounded rate, whatever a stranger sends (no sockets, no loop).

The first refusal after a quiet interval is one line at once (with its detail: which
key, which username). Every later one is counted; at the end of the interval one
summary line gives the counts per reason and the top source addresses. An interval
with refusals opens the next one; an interval without closes the series. So a flood
costs one line per interval, and memory is bounded by ``max_sources`` addresses.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

__all__ = ["RefusalLog"]

TOP_SOURCES = 5


class RefusalLog:
    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = 1024,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._max_sources = max_sources
        self._open_since: float | None = None
        self._reasons: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._examples: dict[str, str] = {}
        self.total = 0  # every refusal ever noted

    @property
    def open(self) -> bool:
        """An interval is running: the caller must call :meth:`flush` at its end."""
        return self._open_since is not None

    def note(self, reason: str, source: str, detail: str = "") -> str | None:
        """Count one refusal; a line to log now when it opens a new interval."""
        self.total += 1
        if self._open_since is None:
            self._open_since = self._clock()
            return f"refused connection from {source}: {reason}" + (
                f" ({detail})" if detail else ""
            )
        self._reasons[reason] += 1
        if source in self._sources or len(self._sources) < self._max_sources:
            self._sources[source] += 1
        else:
            self._sources["other addresses"] += 1
        if detail and reason not in self._examples:
            self._examples[reason] = detail
        return None

    def flush(self, extra: str = "") -> str | None:
        """End the interval: the summary line, or None (and the series closes) when
        nothing was refused during it."""
        if self._open_since is None:
            return None
        if not self._reasons:
            self._open_since = None
            return None
        now = self._clock()
        seconds = now - self._open_since
        count = sum(self._reasons.values())
        reasons = ", ".join(
            f"{r} {n}" + (f" (e.g. {self._examples[r]})" if r in self._examples else "")
            for r, n in self._reasons.most_common()
        )
        top = ", ".join(f"{s} {n}" for s, n in self._sources.most_common(TOP_SOURCES))
        line = f"refused {count} more connections in {seconds:.0f}s: {reasons}; top sources {top}"
        if extra:
            line += f"; {extra}"
        self._open_since = now
        self._reasons.clear()
        self._sources.clear()
        self._examples.clear()
        return line
