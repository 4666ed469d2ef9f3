"""A peer link in process, against a fake client: what it sends and gives back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sidecar import LogFailed, QppValidatorQueue
from sidecar.daemon.config import Endpoint
from sidecar.daemon.peers_config import PeerConfig, RelaySettings
from sidecar.daemon.relay import PeerLink
from tests.core.helpers import block
from tests.core.simfs import SimDisk
from transport.tiers import DEFAULT_POLICY


class FakeClient:
    """Answers relay requests; `bad` ones with results the link cannot read."""

    def __init__(self, bad: bool) -> None:
        self.bad = bad
        self.sent: list[int] = []

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        items = params["items"]
        self.sent += [i["origin_id"] for i in items]
        tier = {"tier": 3, "name": "x", "reasons": []}
        if self.bad and items:
            return {"tier": tier, "results": []}  # e.g. a peer of another version
        results = [{"origin_id": i["origin_id"], "message_id": 1} for i in items]
        return {"tier": tier, "results": results}


async def test_the_batch_of_an_unreadable_reply_is_sent_again(tmp_path: Path) -> None:
    async with await QppValidatorQueue.open("v", tmp_path, peers=("bob",)) as q:
        mids = [await q.submit(block(n), submitted_by="t", broadcast=True) for n in range(3)]
        link = PeerLink(
            PeerConfig("bob", Endpoint("127.0.0.1", 1), tmp_path / "id"),
            RelaySettings(),
            lambda: q,
            instance="alice",
            node_tier=lambda: 3,
            policy=DEFAULT_POLICY,
            known_hosts=tmp_path / "kh",
        )
        with pytest.raises(ValueError, match="answered"):
            await asyncio.wait_for(link._relay_loop(FakeClient(bad=True)), 5)  # type: ignore[arg-type]
        assert q.relay_backlog("bob").in_flight == 0
        good = FakeClient(bad=False)
        with pytest.raises(TimeoutError):  # the next session sends it all, then idles
            await asyncio.wait_for(link._relay_loop(good), 1)  # type: ignore[arg-type]
        assert good.sent == mids
        assert q.relay_backlog("bob").count == 0


async def test_a_batch_acknowledged_while_the_previous_marks_fail_is_sent_again(
    tmp_path: Path,
) -> None:
    """The marks of batch 1 fail to log (a full disk) while batch 2 is acknowledged:
    batch 2 is not marked either, and must not stay in flight for good."""
    disk = SimDisk()
    q = await QppValidatorQueue.open("v", "/d", layer=disk, peers=("bob",))
    try:
        for n in range(4):
            await q.submit(block(n), submitted_by="t", broadcast=True)
        failed: list[int] = []

        def fault(data: bytes) -> int | None:
            if b'"P"' in data and not failed:  # the first batch's relayed records
                failed.append(1)
                return 0
            return None

        disk.fail_write = fault
        link = PeerLink(
            PeerConfig("bob", Endpoint("127.0.0.1", 1), tmp_path / "id"),
            RelaySettings(batch=2),
            lambda: q,
            instance="alice",
            node_tier=lambda: 3,
            policy=DEFAULT_POLICY,
            known_hosts=tmp_path / "kh",
        )
        with pytest.raises(LogFailed):
            await asyncio.wait_for(link._relay_loop(FakeClient(bad=False)), 5)  # type: ignore[arg-type]
        good = FakeClient(bad=False)
        with pytest.raises(TimeoutError):  # sends what bob lacks, then idles
            await asyncio.wait_for(link._relay_loop(good), 1)  # type: ignore[arg-type]
        assert q.relay_backlog("bob").count == 0, (q.relay_backlog("bob"), good.sent)
    finally:
        await q.close()
