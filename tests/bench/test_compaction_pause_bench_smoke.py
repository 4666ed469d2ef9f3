"""bench/compaction_pause.py runs small, this tree against itself as the "before"
tree (a subprocess per round), and reports figures of its shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def test_compaction_pause_bench_runs_and_reports_its_shape(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "compaction_pause.py"),
            "--messages",
            "3000",
            "--rounds",
            "1",
            "--dir",
            str(tmp_path),
            "--before-tree",
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    ).stdout
    result = orjson.loads(out)
    assert set(result["rounds"]) == {"before", "after"}
    for (run,) in result["rounds"].values():
        assert run["sidecar"] == str(ROOT)
        assert run["live"] >= 3000
        assert run["submits_meanwhile"] > 0
        assert run["worst_submit_ms"] >= run["p99_submit_ms"] > 0
        assert run["peak_over_before"] >= 1.0
        assert len(run["exclusive_ms"]) == 2  # the start and the swap
        assert run["worst_submits"]
    assert set(result["median"]["after"]) >= {"seconds", "worst_submit_ms", "peak_over_before"}
