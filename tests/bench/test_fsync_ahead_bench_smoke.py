"""bench/fsync_ahead.py runs and reports every case it documents (no figure checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.subprocesses import REPO, child_env


def test_fsync_ahead_reports_each_case(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fsync_ahead.py"), "--slices", "2",
         "--dir", str(tmp_path)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    for case in ("batch_append", "batch_over_zeros", "record_over_zeros"):
        assert out[case]["raw_append"] > 0
        assert out[case][case] > 0
        assert out[f"{case}_vs_raw_append"] > 0
    assert list(tmp_path.iterdir()) == []  # its files are gone
