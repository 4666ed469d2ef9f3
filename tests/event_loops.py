"""The event loop in-process async tests of the SSH service, the daemon and the relay
run on: the daemon's default (uvloop), or the one ``QSSH_TEST_EVENT_LOOP`` names
(``asyncio`` runs them on the standard library's loop). Their conftests hand
`loop_factories` to pytest-asyncio's ``pytest_asyncio_loop_factories`` hook."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

from transport import event_loop


def _standard_loop() -> asyncio.AbstractEventLoop:
    return asyncio.new_event_loop()


def _factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    return event_loop.factory(name) or _standard_loop


def selected() -> str:
    name = os.environ.get("QSSH_TEST_EVENT_LOOP", event_loop.DEFAULT)
    if name not in event_loop.NAMES:
        raise ValueError(f"QSSH_TEST_EVENT_LOOP: one of {', '.join(event_loop.NAMES)}")
    return name


def loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], Any]]:
    name = selected()
    return {name: _factory(name)}
