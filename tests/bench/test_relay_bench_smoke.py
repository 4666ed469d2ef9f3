"""bench/relay.py runs end to end on a tiny load and prints results of its shape.

No figure is checked against a threshold: timings on a shared VM prove nothing here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.subprocesses import REPO, child_env


def test_relay_bench_prints_both_cases_and_their_ratio(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "relay.py"), "--rounds", "1",
         "--messages", "20", "--callers", "2", "--dir", str(tmp_path)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert set(result["figures"]) == {"relay", "direct"}
    for case in result["figures"].values():
        assert set(case) == {"msgs_per_s", "p50_ms", "p99_ms"}
        assert case["msgs_per_s"] > 0
    assert result["ratios"]["relay_vs_direct_msgs_per_s"] > 0
