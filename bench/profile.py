"""Where the SSH server's CPU goes under load: py-spy on a real `qssh-sidecar serve`.

    python bench/profile.py [--seconds 10] [--window 16] [--server-tree DIR] [--out FILE]
                            [--flamegraph SVG] [--dir DIR]

Starts the server (from this tree, or from --server-tree, e.g. an older commit
extracted with `git archive`, to compare), drives 16 connections with sync submits
(`--window` in flight on each, as bench/service.py does), and meanwhile samples the
server with `py-spy record --format raw` (collapsed stacks, 200 samples/s, idle
samples dropped). Prints JSON: submits/s, the server's CPU per submit, and each
function's share of the samples, own (innermost frame) and inclusive (anywhere on
the stack), the top ones first; --out keeps the collapsed stacks (a flame graph
input: `flamegraph.pl` or speedscope); --flamegraph has a second py-spy sample the same
load and draw its flame graph (SVG).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import shutil
import subprocess
import tempfile
from collections import Counter
from typing import Any

from bench.cpu import cpu_seconds
from bench.service import SidecarServer, bench_qssh
from bench.stats import dumps

TOP = 25


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/file.py:line)"
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def summarize(collapsed: str) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return {
        "samples": total,
        "own_percent": {k: round(100 * v / total, 1) for k, v in own.most_common(TOP)},
        "inclusive_percent": {
            k: round(100 * v / total, 1) for k, v in inclusive.most_common(TOP * 2)
        },
    }


def _record(
    pyspy: str, pid: int, seconds: float, fmt: str, output: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            pyspy, "record", "--pid", str(pid), "--rate", "200", "--duration", str(int(seconds)),
            "--format", fmt, "--output", str(output), "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def run(
    seconds: float,
    window: int,
    server_tree: str | None,
    out: str | None,
    directory: str | None,
    flamegraph: Path | None = None,
) -> Any:
    beside = Path(sys.executable).with_name("py-spy")  # a venv's, when not on PATH
    pyspy = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
    if pyspy is None:
        raise SystemExit("py-spy not installed (pip install '.[bench]')")
    base = Path(tempfile.mkdtemp(prefix="qssh-profile-", dir=directory))
    server = SidecarServer(base, python_path=server_tree)
    try:
        await server.wait()
        await bench_qssh(server, 16, window, 1.0)  # warm-up
        raw = base / "stacks.txt"
        pid = server.proc.pid
        spies = [_record(pyspy, pid, seconds, "raw", raw)]
        if flamegraph:
            spies.append(_record(pyspy, pid, seconds, "flamegraph", flamegraph))
        cpu_before = cpu_seconds(server.proc.pid)
        load = await bench_qssh(server, 16, window, seconds)
        cpu = cpu_seconds(server.proc.pid) - cpu_before
        for spy in spies:
            await asyncio.to_thread(spy.wait, 60)
        collapsed = raw.read_text() if raw.exists() else ""
        if out:
            Path(out).write_text(collapsed)  # noqa: ASYNC240
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    submits = load["ops_per_s"] * seconds
    return {
        "server_tree": server_tree or "this tree",
        "seconds": seconds,
        "connections": 16,
        "window": window,
        "submits_per_s": round(load["ops_per_s"]),
        "server_cpu_percent": round(100 * cpu / seconds, 1),
        "server_cpu_us_per_submit": round(1e6 * cpu / max(1.0, submits), 1),
        "profile": summarize(collapsed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--server-tree", default=None, help="run the server from this tree")
    parser.add_argument("--out", default=None, help="keep the collapsed stacks here")
    parser.add_argument("--flamegraph", default=None, help="draw a flame graph (SVG) here")
    parser.add_argument(
        "--dir", default=None, help="where the log goes (/dev/shm: fsync is free, CPU only)"
    )
    args = parser.parse_args()
    flamegraph = Path(args.flamegraph).resolve() if args.flamegraph else None
    result = asyncio.run(
        run(args.seconds, args.window, args.server_tree, args.out, args.dir, flamegraph)
    )
    sys.stdout.buffer.write(dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
