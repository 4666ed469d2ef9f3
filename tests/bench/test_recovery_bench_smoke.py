"""bench/recovery.py runs end to end, beside an older tree, and reports what it opened.

No figure is checked against a threshold: timings on a shared VM prove nothing here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.subprocesses import REPO, child_env


def test_recovery_bench_opens_both_logs_with_both_trees(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "recovery.py"), "--live", "3000",
         "--rounds", "1", "--dir", str(tmp_path), "--before-tree", str(REPO)],
        cwd=REPO, env=child_env(),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["1x"]["log"] == {
        "records": 3000, "submits": 3000, "consumes": 0, "live": 3000, "log_mb": 1,
    }  # fmt: skip
    assert result["3x"]["log"]["records"] == 9000
    assert result["3x"]["log"]["consumes"] == 3000
    for shape in ("1x", "3x"):
        for tree in ("after", "before"):
            (opened,) = result[shape][tree]["rounds"]
            assert opened["restored"] == 3000
            assert opened["peak_rss_mb"] >= opened["rss_before_open_mb"]
        assert result[shape]["before_over_after_seconds"] > 0
    assert result["filled_by_submits"]["messages"] == 3000
    assert list(tmp_path.iterdir()) == []  # the logs are removed
