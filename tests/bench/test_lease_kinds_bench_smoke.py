"""bench/lease_kinds.py runs (--quick, one round) and reports figures of its shape."""

from __future__ import annotations

from bench import lease_kinds


def test_lease_kinds_bench_runs_and_reports_its_shape() -> None:
    out = lease_kinds.run(rounds=1, quick=True)
    assert out["other_kinds_waiting"] == 100_000
    assert out["blocks"] == 10_000
    assert out["us_per_lease_by_kind_at_depth"] > 0
    assert out["us_per_lease_by_kind_alone"] > 0
    assert out["ratio"] > 0
