from __future__ import annotations

from .harness import notify_socket, spawn

__all__ = ["notify_socket", "spawn"]
