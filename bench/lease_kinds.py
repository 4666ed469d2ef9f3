"""Leasing by kind at depth: prints one JSON object.

Pure queue state, in one process. A consumer leasing only `block_import` messages,
from a state where 1M other messages (gossip) wait beside them, against the same
consumer on a state holding only the blocks (the baseline), alternating round by
round: ratio = baseline time per lease / ours, median over rounds. A ratio near 1 means
a lease by kind costs the same whatever waits in other kinds.

    python bench/lease_kinds.py [--rounds N] [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time
from typing import Any

from bench.stats import dumps, median
from sidecar import Kind, QueueMessage, QueueMessageWithProvenance
from sidecar.state import QueueLimits, QueueState

BIG = QueueLimits(max_messages=10_000_000, max_bytes=1 << 40)
BLOCKS = frozenset({Kind.BLOCK_IMPORT})


def _state(others: int, blocks: int) -> QueueState:
    gossip = QueueMessage.create("gossip", topic="t", data=bytes(200))
    block = QueueMessage.create("block_import", block_hash=bytes(32), block_number=1, timestamp=1)
    items = [QueueMessageWithProvenance(gossip, i, 0.0, "b") for i in range(1, others + 1)]
    items += [QueueMessageWithProvenance(block, others + i, 0.0, "b") for i in range(1, blocks + 1)]
    state = QueueState(BIG)
    state.load(items)
    return state


def _lease_all(state: QueueState, n: int) -> float:
    """Seconds per lease for `n` leases by kind; then every lease is released."""
    started = time.perf_counter()
    leases = [state.lease(0.0, 60.0, kinds=BLOCKS) for _ in range(n)]
    seconds = (time.perf_counter() - started) / n
    for lease in leases:
        assert lease is not None
        state.release(lease.lease_id)
    return seconds


def run(rounds: int, quick: bool) -> dict[str, Any]:
    others = 100_000 if quick else 1_000_000
    blocks = 10_000
    deep, alone = _state(others, blocks), _state(0, blocks)
    ours: list[float] = []
    base: list[float] = []
    for _ in range(rounds):
        base.append(_lease_all(alone, blocks))
        ours.append(_lease_all(deep, blocks))
    return {
        "other_kinds_waiting": others,
        "blocks": blocks,
        "rounds": rounds,
        "us_per_lease_by_kind_at_depth": round(median(ours) * 1e6, 3),
        "us_per_lease_by_kind_alone": round(median(base) * 1e6, 3),
        "ratio": round(median([b / o for b, o in zip(base, ours, strict=True)]), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sys.stdout.buffer.write(dumps(run(args.rounds, args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
