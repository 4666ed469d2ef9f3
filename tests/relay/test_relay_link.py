"""A peer link in process, against a fake client: what it sends and gives back."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from sidecar import LogFailed, QppValidatorQueue, SidecarError
from sidecar.daemon.config import Endpoint
from sidecar.daemon.peers_config import PeerConfig, RelaySettings
from sidecar.daemon.relay import PeerLink
from tests.core.helpers import block
from tests.core.simfs import SimDisk
from transport.client import error_from_wire
from transport.tiers import DEFAULT_POLICY


def bob_link(q: QppValidatorQueue, tmp_path: Path, settings: RelaySettings) -> PeerLink:
    """alice's link to a peer bob that is never dialled: the tests drive its batches."""
    return PeerLink(
        PeerConfig("bob", Endpoint("127.0.0.1", 1), tmp_path / "id"),
        settings,
        lambda: q,
        instance="alice",
        node_tier=lambda: 3,
        policy=DEFAULT_POLICY,
        known_hosts=tmp_path / "kh",
    )


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
        link = bob_link(q, tmp_path, RelaySettings())
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
        link = bob_link(q, tmp_path, RelaySettings(batch=2))
        with pytest.raises(LogFailed):
            await asyncio.wait_for(link._relay_loop(FakeClient(bad=False)), 5)  # type: ignore[arg-type]
        good = FakeClient(bad=False)
        with pytest.raises(TimeoutError):  # sends what bob lacks, then idles
            await asyncio.wait_for(link._relay_loop(good), 1)  # type: ignore[arg-type]
        assert q.relay_backlog("bob").count == 0, (q.relay_backlog("bob"), good.sent)
    finally:
        await q.close()


class RefusingClient:
    """A peer refusing every relayed message with a reason of its choosing, or (with
    ``whole``) the whole request, as an error reply (raised as the client raises it)."""

    def __init__(self, message: str, whole: bool = False) -> None:
        self.message = message
        self.whole = whole

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.whole:
            raise error_from_wire("unavailable", self.message)
        error = {"code": "queue_full", "message": self.message}
        return {
            "tier": {"tier": 3, "name": "x", "reasons": []},
            "results": [{"error": error} for _ in params["items"]],
        }


@pytest.mark.parametrize("whole", [False, True], ids=["an-item-refused", "the-request-refused"])
async def test_what_a_peer_says_is_logged_on_one_bounded_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, whole: bool
) -> None:
    """A peer's reason reaches our log (`peer bob: link down: …`) and `peers`: a
    newline in it wrote a line of the peer's choosing into the text log, and its
    length was the peer's to choose (up to a 2 MiB frame)."""
    forged = "full\n2026-12-07T01:01:18.319Z ERROR sidecar.daemon: forged\x1b[2K" + "x" * 100_000
    async with await QppValidatorQueue.open("v", tmp_path, peers=("bob",)) as q:
        await q.submit(block(1), submitted_by="t", broadcast=True)
        link = bob_link(q, tmp_path, RelaySettings())
        client = RefusingClient(forged, whole)
        with pytest.raises(SidecarError) as refused:
            await asyncio.wait_for(link._relay_loop(client), 5)  # type: ignore[arg-type]
        caplog.set_level(logging.WARNING, logger="sidecar.daemon.relay")
        link._failed(refused.value)
    (line,) = [r.getMessage() for r in caplog.records if "link down" in r.getMessage()]
    assert "full\\n2026-12-07T01:01:18.319Z ERROR" in line, line
    assert line.isprintable(), line
    assert len(line) < 1000, len(line)
    assert link.state.last_error is not None
    assert link.state.last_error.isprintable()
