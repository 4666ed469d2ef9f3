"""Recovery: the time and peak RSS of opening a large log (optionally beside an older tree).

    python bench/recovery.py [--live 1000000] [--rounds 3] [--dir DIR]
                             [--before-tree PATH] [--no-filled]

It writes two logs (once, with this tree's record encoders; the format is the same for
both trees) of gossip messages of 299 canonical bytes, in frames of 256 records (a full
group-commit batch of 256 callers), each leaving L = --live messages live:

* "1x": L submit records;
* "3x": 3L records: 2L submits and L consumes (after each frame of 256 submits, a frame
  consuming the 128 oldest messages; the rest at the end).

Each round opens each log in a fresh subprocess with this tree and, given
`--before-tree`, with that tree too, alternating, and measures the open's wall and CPU
time, the RSS just before (the interpreter), the peak RSS (VmHWM, reset before the
open) and the steady RSS once it returned (after a `gc.collect()`). Then a fresh
process fills a queue with the same L messages by sync submits (256 callers) and
reports its RSS: the steady state of the same queue, which recovery's peak is compared
with.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

import orjson

from bench.procmem import message_json, peak_rss_bytes, reset_peak_rss, rss_bytes
from bench.stats import median

# `sidecar` is imported inside the functions below, once `--tree` chose which checkout's
HERE = Path(__file__).resolve().parents[1]
NAME = "recovery"
FRAME_RECORDS = 256
PAYLOAD = 300
LIVE = 1_000_000  # default live messages


def submit_record(i: int, now: float) -> bytes:
    text = message_json(i, PAYLOAD).decode()
    return orjson.dumps(["S", i, 50, now, "b", "sync", True, False, False, 0, text])


def write_log(directory: str, live: int, dead: int) -> dict[str, Any]:
    """A log of `live + dead` submits of which `dead` are consumed (see the docstring)."""
    from sidecar.wal import consume_record, encode_frame, file_header  # noqa: PLC0415

    submits = live + dead
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{NAME}.wal")
    now = time.time()
    oldest = 1
    consumed = 0
    with open(path, "wb") as f:
        f.write(file_header())
        for first in range(1, submits + 1, FRAME_RECORDS):
            batch = [
                submit_record(i, now) for i in range(first, min(submits + 1, first + FRAME_RECORDS))
            ]
            f.write(encode_frame(batch))
            n = min(FRAME_RECORDS // 2, dead - consumed)
            if n > 0:
                f.write(encode_frame([consume_record(oldest + k) for k in range(n)]))
                oldest += n
                consumed += n
        while consumed < dead:  # what the interleaving did not reach
            n = min(FRAME_RECORDS, dead - consumed)
            f.write(encode_frame([consume_record(oldest + k) for k in range(n)]))
            oldest += n
            consumed += n
        f.flush()
        os.fsync(f.fileno())
    return {
        "records": submits + consumed,
        "submits": submits,
        "consumes": consumed,
        "live": submits - consumed,
        "log_mb": round(os.path.getsize(path) / 2**20),
    }


async def _open(directory: str) -> dict[str, Any]:
    from sidecar import QppValidatorQueue  # noqa: PLC0415
    from sidecar.state import QueueLimits  # noqa: PLC0415

    limits = QueueLimits(max_messages=100_000_000, max_bytes=1 << 40)
    gc.collect()
    base = rss_bytes()
    reset_peak_rss()
    cpu = time.process_time()
    started = time.perf_counter()
    q = await QppValidatorQueue.open(NAME, directory, limits=limits, compact_bytes=1 << 62)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    peak = peak_rss_bytes()
    gc.collect()
    steady = rss_bytes()
    depth = q.depth()["total"]
    records = q.recovery.records if q.recovery else 0
    await q.close()
    return {
        "records": records,
        "restored": depth,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "rss_before_open_mb": round(base / 2**20),
        "steady_rss_mb": round(steady / 2**20),
        "peak_rss_mb": round(peak / 2**20),
        "peak_over_steady": round(peak / steady, 3),
        "growth_peak_over_steady": round((peak - base) / max(1, steady - base), 3),
    }


async def _filled(directory: str, live: int) -> dict[str, Any]:
    """RSS of a queue holding `live` of the same messages, filled by sync submits of
    256 concurrent callers (group commit), as in bench/depth.py."""
    from sidecar import QppValidatorQueue, QueueMessage  # noqa: PLC0415
    from sidecar.state import QueueLimits  # noqa: PLC0415

    limits = QueueLimits(max_messages=100_000_000, max_bytes=1 << 40)
    gc.collect()
    base = rss_bytes()
    q = await QppValidatorQueue.open(NAME, directory, limits=limits, compact_bytes=1 << 62)
    callers = 256

    async def caller(first: int) -> None:
        for i in range(first, live + 1, callers):
            msg = QueueMessage.from_json(message_json(i, PAYLOAD))
            await q.submit_sync(msg, submitted_by="b")

    await asyncio.gather(*(caller(c + 1) for c in range(callers)))
    gc.collect()
    steady = rss_bytes()
    depth = q.depth()["total"]
    await q.close()
    return {
        "messages": depth,
        "rss_before_mb": round(base / 2**20),
        "steady_rss_mb": round(steady / 2**20),
    }


def child(tree: str, what: str, directory: str, live: int = 0) -> dict[str, Any]:
    """Run `what` ("open" or "filled") in a fresh process importing `tree`'s sidecar."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            f"--child-{what}",
            directory,
            "--tree",
            tree,
            "--live",
            str(live),
        ],
        check=True,
        capture_output=True,
        timeout=1200,
    ).stdout
    result: dict[str, Any] = orjson.loads(out)
    return result


SHAPES = {"1x": (1, 0), "3x": (1, 1)}  # (live, dead) submits per live message


def run(
    live: int, rounds: int, data_dir: str | None, before: str | None, filled: bool = True
) -> dict[str, Any]:
    base = tempfile.mkdtemp(prefix="qssh-recovery-", dir=data_dir or "/var/tmp")
    trees = {"after": str(HERE)} | ({"before": before} if before else {})
    try:
        logs = {name: os.path.join(base, name) for name in SHAPES}
        shapes = {
            name: write_log(logs[name], live * a, live * b) for name, (a, b) in SHAPES.items()
        }
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            name: {t: [] for t in trees} for name in SHAPES
        }
        for r in range(rounds):
            for name in SHAPES:
                order = list(trees) if r % 2 == 0 else list(reversed(trees))
                for t in order:
                    runs[name][t].append(child(trees[t], "open", logs[name]))
        result: dict[str, Any] = {"live": live, "rounds": rounds}
        for name in SHAPES:
            row: dict[str, Any] = {"log": shapes[name]}
            for t in trees:
                got = runs[name][t]
                row[t] = {
                    key: median([g[key] for g in got])
                    for key in ("seconds", "cpu_seconds", "peak_rss_mb", "steady_rss_mb")
                } | {"rounds": got}
            if before:
                row["before_over_after_seconds"] = round(
                    row["before"]["seconds"] / row["after"]["seconds"], 2
                )
            result[name] = row
        if filled:
            result["filled_by_submits"] = child(
                str(HERE), "filled", os.path.join(base, "filled"), live
            )
        return result
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--live", type=int, default=LIVE, help="live messages in each log")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the logs go (default: /var/tmp)")
    parser.add_argument("--before-tree", default=None, help="a checkout to compare with")
    parser.add_argument("--no-filled", action="store_true", help="skip the filled queue")
    parser.add_argument("--child-open", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--child-filled", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=str(HERE), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_open or args.child_filled:
        sys.path.insert(0, args.tree)
        coro = _open(args.child_open) if args.child_open else _filled(args.child_filled, args.live)
        result = asyncio.run(coro)
    else:
        result = run(args.live, args.rounds, args.dir, args.before_tree, not args.no_filled)
    sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
