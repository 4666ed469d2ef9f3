"""How every benchmark here measures and reports: interleaving, medians, ratios, JSON.

On these virtual machines a lone fsync can cost a whole scheduler tick when the CPU
is idle and far less when it is busy (SPEC §8). So a figure is only compared with a
baseline measured in the same process, in the same rounds, interleaved case by case,
and each figure reported is the median over rounds.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

T = TypeVar("T")

# Distributions whose versions go into every result: ours, the baselines, the crypto.
PACKAGES = (
    "asyncssh",
    "cryptography",
    "pqcrypto",
    "orjson",
    "crc32c",
    "persist-queue",
    "redis",
    "matplotlib",
)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ratio(numerator: float, denominator: float) -> float:
    if not denominator > 0:
        raise ValueError(f"ratio with a non-positive denominator {denominator!r}")
    return numerator / denominator


def per_round_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Ratio of the two figures of each round (both measured side by side)."""
    return [ratio(a, b) for a, b in zip(numerators, denominators, strict=True)]


def throughput(count: int, elapsed: float, latencies: Sequence[float]) -> dict[str, float]:
    """Operations per second and latency percentiles (ms) of one timed run."""
    return {
        "ops_per_s": count / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "ops": count,
    }


def spread_ms(samples: Sequence[float]) -> dict[str, float]:
    """Median and 10th/90th percentiles, in ms, of durations in seconds."""
    return {
        "median_ms": round(median(samples) * 1e3, 3),
        "p10_ms": round(percentile(samples, 0.10) * 1e3, 3),
        "p90_ms": round(percentile(samples, 0.90) * 1e3, 3),
    }


def median_fields(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Field-wise median of several runs' results (same keys in each)."""
    return {key: median(run[key] for run in runs) for key in runs[0]}


async def interleave(
    cases: Sequence[tuple[str, Callable[[], Awaitable[T]]]], rounds: int
) -> dict[str, list[T]]:
    """Run every case once per round, in order, for `rounds` rounds: each case sees the
    same machine conditions as the others. Returns each case's samples, in round order."""
    samples: dict[str, list[T]] = {name: [] for name, _ in cases}
    for _ in range(rounds):
        for name, case in cases:
            samples[name].append(await case())
    return samples


async def closed_loop(
    lanes: Sequence[Callable[[], Awaitable[Any]]], window: int, seconds: float
) -> dict[str, float]:
    """Drive each lane (one connection) with `window` requests in flight for `seconds`;
    each request starts when the previous one on its slot is answered."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def slot(op: Callable[[], Awaitable[Any]]) -> None:
        while (now := time.perf_counter()) < end:
            await op()
            latencies.append(time.perf_counter() - now)

    start = time.perf_counter()
    await asyncio.gather(*(slot(op) for op in lanes for _ in range(window)))
    return throughput(len(latencies), time.perf_counter() - start, latencies)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def dumps(result: Any) -> bytes:
    return orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n"
