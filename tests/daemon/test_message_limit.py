"""``[limits] max_message_bytes`` holds on the real daemon for SSH submits and batches
(it once held only on the node endpoint: a 100,041-byte message was taken over SSH
with the limit at 65,536)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

import transport.ssh_algorithms  # noqa: F401
from sidecar.errors import MessageTooLarge
from tests.faults.harness import Serve
from tests.subprocesses import Operator, free_port

LIMIT = 65_536


def gossip_of(size: int) -> dict[str, Any]:
    """A gossip message whose base64 data is about ``size`` bytes."""
    return {
        "kind": "gossip",
        "topic": "big",
        "data": base64.b64encode(bytes(size * 3 // 4)).decode(),
    }


async def test_ssh_submits_over_max_message_bytes_are_refused_by_the_daemon(
    tmp_path: Path,
) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text(f"[limits]\nmax_message_bytes = {LIMIT}\n[metrics]\nlisten = ''\n")
    data = tmp_path / "data"
    d = Serve(tmp_path, data, free_port(), extra=["--config", str(config)])
    try:
        await asyncio.to_thread(d.wait_ready)
        async with Operator.of(data).connect(d.port) as c:
            with pytest.raises(MessageTooLarge, match=f"{LIMIT}-byte limit"):
                await c.submit(gossip_of(100_041), "sync")
            small, big = await c.submit_batch([gossip_of(60_000), gossip_of(100_041)], "sync")
            assert small["persisted"] is True
            assert big["error"]["code"] == "too_large"
            assert await c.depth() == 1
    finally:
        assert d.stop() == 0, d.output()[-2000:]
