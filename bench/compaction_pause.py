"""Where a compaction's submit pauses come from, and old tree against new in one run.

    python bench/compaction_pause.py [--messages N] [--rounds R] [--before-tree DIR]

Each round runs in a fresh subprocess per tree (interleaved: before, after, before,
...): it fills a queue with N sync submits (256 callers, the messages of
bench/depth.py), then runs `compact_wal()` while 16 callers keep submitting, and
reports, beside depth.py's figures (duration, worst and p99 submit latency, peak RSS
over RSS before), what happened during the compaction on one clock:

* every section run between batches (`GroupCommitter.run_exclusive`): its duration;
* every cyclic-GC collection (`gc.callbacks`): its generation and duration;
* the event loop's lag, sampled by a task sleeping 1 ms (each lag over 5 ms);
* the ten slowest submits, each with what overlapped it.

`--before-tree` runs the same rounds with the `sidecar` package of another checkout
(e.g. `git worktree add /tmp/before <commit>`); the figures are medians over rounds.
"""

from __future__ import annotations

import sys
from pathlib import Path

# the tree under test first (--child TREE), so that its `sidecar` is the one imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(
    0, sys.argv[sys.argv.index("--child") + 1] if "--child" in sys.argv else sys.path[0]
)

import argparse
import asyncio
import gc
import inspect
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from typing import Any

import orjson

import sidecar
from bench.depth import BIG, CALLERS, fill
from bench.procmem import message_json, peak_rss_bytes, reset_peak_rss, rss_bytes
from bench.stats import dumps, percentile
from sidecar import QppValidatorQueue, QueueMessage
from sidecar.commit import GroupCommitter
from sidecar.wal import WriteAheadLog

_HERE = Path(__file__).resolve().parents[1]
NAME = "pause"
_LAG_REPORTED = 0.005
_CHUNK_CALLS = ("add_compacted", "_write_pending")  # loop lags at least this long are listed


class Timeline:
    """Events on the perf_counter clock: exclusive sections, GC collections, loop lags."""

    def __init__(self) -> None:
        self.exclusive: list[tuple[float, float]] = []  # (start, end), in the worker
        self.gc: list[tuple[float, float, int]] = []  # (start, end, generation)
        self.lags: list[tuple[float, float]] = []  # (when it should have woken, lag)
        self.phases: list[tuple[float, float, str]] = []  # log calls, any thread
        self._gc_started = 0.0

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc.append((self._gc_started, time.perf_counter(), info["generation"]))

    def overlapping(self, start: float, end: float) -> dict[str, Any]:
        def ms(a: float, b: float) -> float:
            return round((min(b, end) - max(a, start)) * 1e3, 1)

        return {
            "exclusive_ms": [ms(a, b) for a, b in self.exclusive if a < end and b > start],
            "gc_ms": [
                (g, ms(a, b), round((b - a) * 1e3, 1))
                for a, b, g in self.gc
                if a < end and b > start
            ],
            "lag_ms": [round(lag * 1e3, 1) for t, lag in self.lags if t < end and t + lag > start],
            "log_calls_ms": [
                (name, ms(a, b), round((b - a) * 1e3, 1))
                for a, b, name in self.phases
                if a < end
                and b > start
                and name != "append"
                and (name != "append_and_sync" or b - a > 0.005)
            ],
        }


def instrument(timeline: Timeline) -> None:
    """Time each job run between batches (compaction's snapshot and swap)."""
    original = GroupCommitter.run_exclusive

    async def run_exclusive(self: GroupCommitter, job: Any) -> Any:
        def timed() -> Any:
            started = time.perf_counter()
            try:
                return job()
            finally:
                timeline.exclusive.append((started, time.perf_counter()))

        return await original(self, timed)

    GroupCommitter.run_exclusive = run_exclusive  # type: ignore[method-assign]
    for name, fn in vars(WriteAheadLog).items():
        if inspect.isfunction(fn) and not name.startswith("__") and name != "sync":
            setattr(WriteAheadLog, name, _timed(timeline, name, fn))


def _timed(timeline: Timeline, name: str, fn: Any) -> Any:
    def call(*args: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            timeline.phases.append((started, time.perf_counter(), name))

    return call


async def sample_lag(timeline: Timeline, stop: asyncio.Event) -> None:
    while not stop.is_set():
        due = time.perf_counter() + 0.001
        await asyncio.sleep(0.001)
        lag = time.perf_counter() - due
        if lag >= _LAG_REPORTED:
            timeline.lags.append((due, lag))


async def one_round(messages: int, payload: int, directory: str) -> dict[str, Any]:
    timeline = Timeline()
    instrument(timeline)
    base = tempfile.mkdtemp(prefix="qssh-pause-", dir=directory)
    try:
        q = await QppValidatorQueue.open(NAME, os.path.join(base, "q"), limits=BIG)
        fill_started = time.perf_counter()
        await fill(q, 0, messages, payload)
        fill_seconds = time.perf_counter() - fill_started

        msg = QueueMessage.from_json(message_json(0, payload))
        spans: list[tuple[float, float]] = []
        done = False

        async def caller() -> None:
            while not done:
                t = time.perf_counter()
                await q.submit_sync(msg, submitted_by="b")
                spans.append((t, time.perf_counter()))

        gc.collect()
        before = rss_bytes()
        reset_peak_rss()
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(sample_lag(timeline, stop))
        tasks = [asyncio.ensure_future(caller()) for _ in range(CALLERS)]
        await asyncio.sleep(0.2)
        spans.clear()
        timeline.exclusive.clear()
        timeline.lags.clear()
        timeline.phases.clear()
        gc.callbacks.append(timeline.gc_callback)
        started = time.perf_counter()
        result = await q.compact_wal()
        ended = time.perf_counter()
        await asyncio.sleep(0.2)
        gc.callbacks.remove(timeline.gc_callback)
        done = True
        await asyncio.gather(*tasks)
        stop.set()
        await sampler
        peak = peak_rss_bytes()
        await q.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    latencies = [b - a for a, b in spans]
    by_end: dict[float, tuple[float, float]] = {}  # one per batch (callers share its end)
    for a, b in spans:
        key = round(b, 3)
        if key not in by_end or a < by_end[key][0]:
            by_end[key] = (a, b)
    worst = sorted(by_end.values(), key=lambda s: s[0] - s[1])[:10]
    in_compaction = [(a, b, g) for a, b, g in timeline.gc if a < ended and b > started]
    return {
        "sidecar": os.path.dirname(os.path.dirname(sidecar.__file__ or "")),
        "live": result["live"],
        "fill_submits_per_s": round(messages / fill_seconds),
        "seconds": round(result["seconds"], 3),
        "submits_meanwhile": len(latencies),
        "worst_submit_ms": round(max(latencies, default=0.0) * 1e3, 1),
        "p99_submit_ms": round(percentile(latencies, 0.99) * 1e3, 2),
        "peak_over_before": round(peak / before, 3),
        "rss_before_mb": round(before / 2**20),
        "exclusive_ms": [round((b - a) * 1e3, 1) for a, b in timeline.exclusive],
        "gc_in_compaction": {
            "collections": len(in_compaction),
            "by_generation": [sum(1 for *_, g in in_compaction if g == k) for k in range(3)],
            "max_ms": round(max((b - a for a, b, _ in in_compaction), default=0.0) * 1e3, 1),
        },
        "phases_ms": [  # the compaction's log calls (its many chunk writes summed up)
            (name, round((a - started) * 1e3), round((b - a) * 1e3, 1))
            for a, b, name in timeline.phases
            if name not in ("append_and_sync", "append", *_CHUNK_CALLS)
        ],
        "chunk_calls": {
            name: {"count": len(d), "max_ms": round(max(d, default=0.0) * 1e3, 1)}
            for name in _CHUNK_CALLS
            if (d := [b - a for a, b, n in timeline.phases if n == name])
        },
        "slow_fsyncs_ms": sorted(
            (round((b - a) * 1e3, 1) for a, b, n in timeline.phases if n == "append_and_sync"),
            reverse=True,
        )[:10],
        "lags_over_5ms": len(timeline.lags),
        "max_lag_ms": round(max((lag for _, lag in timeline.lags), default=0.0) * 1e3, 1),
        "worst_submits": [
            {
                "at_ms": round((a - started) * 1e3),
                "ms": round((b - a) * 1e3, 1),
                **timeline.overlapping(a, b),
            }
            for a, b in worst
        ],
    }


def run_child(tree: str, messages: int, payload: int, directory: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            tree,
            "--messages",
            str(messages),
            "--payload",
            str(payload),
            "--dir",
            directory,
        ],
        check=True,
        capture_output=True,
        timeout=3600,
    ).stdout
    result: dict[str, Any] = orjson.loads(out)
    return result


_SUMMARY = ("seconds", "worst_submit_ms", "p99_submit_ms", "peak_over_before", "max_lag_ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--payload", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp")
    parser.add_argument("--before-tree", default=None, help="also run this checkout's sidecar")
    parser.add_argument("--child", metavar="TREE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(one_round(args.messages, args.payload, args.dir))
        sys.stdout.buffer.write(dumps(result))
        return 0
    trees = {"after": str(_HERE)}
    if args.before_tree:
        trees = {"before": os.path.abspath(args.before_tree), **trees}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            rounds[name].append(run_child(tree, args.messages, args.payload, args.dir))
            print(f"round {r + 1} {name}: {rounds[name][-1]}", file=sys.stderr, flush=True)
    summary = {
        name: {k: statistics.median(r[k] for r in runs) for k in _SUMMARY}
        | {f"all_{k}": [r[k] for r in runs] for k in _SUMMARY}
        for name, runs in rounds.items()
    }
    sys.stdout.buffer.write(
        dumps({"messages": args.messages, "trees": trees, "median": summary, "rounds": rounds})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
