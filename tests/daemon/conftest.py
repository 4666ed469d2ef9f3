from __future__ import annotations

from tests.event_loops import loop_factories as pytest_asyncio_loop_factories

from .harness import notify_socket, spawn

__all__ = ["notify_socket", "pytest_asyncio_loop_factories", "spawn"]
