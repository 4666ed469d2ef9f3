"""What a queued message costs in memory, and that max_bytes bounds it.

Structural checks (what a message and the queue state keep per message, what recovery
holds while it reads a log) and memory measured in a fresh child process
(tests/core/memory_child.py). Memory, never time, is asserted.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from sidecar import Kind, QueueMessage, QueueMessageWithProvenance
from sidecar.gc_policy import GcFreezer
from sidecar.state import MESSAGE_OVERHEAD_BYTES, QueueState, message_cost
from tests.subprocesses import REPO, child_env

CHILD = Path(__file__).with_name("memory_child.py")
BYTES_HEADER = sys.getsizeof(b"")


def child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(CHILD), *args],
        check=True,
        capture_output=True,
        timeout=240,
        env=child_env(),
        cwd=REPO,
    ).stdout
    result: dict[str, Any] = orjson.loads(out)
    return result


def gossip(n: int) -> QueueMessage:
    return QueueMessage.from_json({"kind": "gossip", "topic": "t", "data": "aGkh" * (n + 1)})


def test_a_message_keeps_only_its_exact_bytes_and_its_kind() -> None:
    m = gossip(70)
    assert not hasattr(m, "__dict__")
    referents = gc.get_referents(m)
    assert not any(isinstance(r, dict) for r in referents)
    encoded = m.to_json_bytes()
    assert sys.getsizeof(encoded) == BYTES_HEADER + len(encoded) == BYTES_HEADER + m.encoded_size
    assert {type(r) for r in referents} <= {bytes, Kind, type}
    m.to_json()  # reading a field parses, and keeps nothing
    assert not any(isinstance(r, dict) for r in gc.get_referents(m))


def test_validated_messages_cost_their_bytes_not_orjsons_buffer() -> None:
    # orjson's result holds its 4 KB growth buffer: 4.7 KB of RSS per 300-byte message
    # when it was kept; the exact copy costs its bytes plus a small object.
    result = child("messages", "50000")
    assert 280 <= result["encoded_size"] <= 320
    assert result["per_message"] < result["encoded_size"] + 200


def test_queue_state_adds_no_tracked_object_per_message() -> None:
    items = [QueueMessageWithProvenance(gossip(i), i + 1, 0.0, "t") for i in range(2000)]
    state = QueueState()
    was = gc.isenabled()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for item in items:
            state.admit(item.message.encoded_size)
            state.push(item)
        grown = len(gc.get_objects()) - before
    finally:
        if was:
            gc.enable()
    assert grown < 50  # the dict and heap grow; no tuple per message
    assert state.bytes == sum(message_cost(i.message.encoded_size) for i in items)


def test_a_queue_filled_to_max_bytes_stays_within_its_bound(tmp_path: Path) -> None:
    # docs/operations.md: RSS grows by at most max_queue_bytes x 1.1 (+ 8 MiB) as
    # the queue fills, because each message is accounted at its measured cost.
    limit = 48 * 1024 * 1024
    result = child("fill", str(tmp_path), str(limit))
    assert result["accounted"] <= limit
    assert result["accounted"] > limit - 2 * message_cost(400)  # it really was full
    assert result["depth"] * (300 + MESSAGE_OVERHEAD_BYTES) > limit * 0.95
    assert result["rss_growth"] <= limit * 1.1 + 8 * 1024 * 1024, result


def test_gc_freezer_freezes_deep_queues_and_unfreezes_drained_ones() -> None:
    freezer = GcFreezer(every=10)
    assert gc.get_freeze_count() == 0
    try:
        freezer.arrived(9)
        freezer.check(depth=100)
        assert freezer.freezes == 0
        freezer.arrived(1)
        freezer.check(depth=5)  # shallow: the collector copes, nothing frozen
        assert freezer.freezes == 0
        freezer.check(depth=100)
        assert freezer.freezes == 1
        assert gc.get_freeze_count() > 0
        freezer.check(depth=60)
        assert freezer.unfreezes == 0
        freezer.check(depth=49)  # below half of what was frozen
        assert freezer.unfreezes == 1
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_recovery_holds_the_live_messages_not_every_record(tmp_path: Path) -> None:
    # A log of 40,000 submits, all but the last 1,000 consumed (79,000 records, 15 MB):
    # recovery folds each frame into the live set as it reads it, and reads the file
    # mapped, so Python memory peaks near what the recovered queue holds, not at the
    # log's records (holding them all peaked at 51 MB here).
    result = child("recover", str(tmp_path / "q"), "40000")
    assert result["depth"] == 1000
    assert result["records"] == 79_000
    assert result["peak"] <= 3 * result["held"] + 1024 * 1024, result
    assert result["peak"] < result["log_bytes"] / 4, result
