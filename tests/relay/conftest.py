"""In-process relay tests run on the daemon's event loop (tests/event_loops.py)."""

from __future__ import annotations

from tests.event_loops import loop_factories as pytest_asyncio_loop_factories

__all__ = ["pytest_asyncio_loop_factories"]
