"""The event loop the daemon and ``qssh-queue`` run on.

uvloop (libuv, in C) by default: its socket reads and writes, callbacks and timers
cost a fraction of asyncio's pure-Python loop, and an SSH request is mostly that.
``asyncio`` is the standard library's loop, for when uvloop misbehaves somewhere
(``event_loop = "asyncio"`` in the daemon's config, or ``--event-loop asyncio``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

UVLOOP = "uvloop"
ASYNCIO = "asyncio"
NAMES = (UVLOOP, ASYNCIO)
DEFAULT = UVLOOP


def factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for `name` (None: asyncio's own); ValueError for another name."""
    if name == UVLOOP:
        try:  # imported here: without uvloop, "asyncio" must still start
            import uvloop  # noqa: PLC0415
        except ImportError:
            raise ValueError(
                'uvloop is not installed: install it, or choose event loop "asyncio"'
            ) from None
        return uvloop.new_event_loop
    if name == ASYNCIO:
        return None
    raise ValueError(f"event loop must be one of {', '.join(NAMES)}, got {name!r}")


def run(main: Coroutine[Any, Any, T], name: str = DEFAULT) -> T:
    """``asyncio.run(main)`` on the named loop."""
    try:
        loop_factory = factory(name)
    except ValueError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def running() -> str:
    """The name of the loop running now (`NAMES`)."""
    module = type(asyncio.get_running_loop()).__module__
    return UVLOOP if module.partition(".")[0] == "uvloop" else ASYNCIO
