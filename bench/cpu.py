"""CPU time of processes, read from /proc: what each side of a benchmark spends.

`tree_seconds(pid)` counts a process and its live descendants (sshd forks a child per
connection); `Meter` takes the CPU of named processes around one timed run.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Mapping
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_seconds(pid: int) -> float:
    """CPU of `pid` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
        todo.extend(children.get(p, ()))
    return total


def own_seconds() -> float:
    """CPU of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reaped_children_seconds() -> float:
    """CPU of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """CPU of each named process between `start()` and `stop(ops, seconds)`, as
    ``{name}_cpu_us_per_op`` and ``{name}_cpu_percent`` (100 = one core)."""

    def __init__(self, sources: Mapping[str, Callable[[], float]]) -> None:
        self._sources = dict(sources)
        self._before: dict[str, float] = {}

    def start(self) -> None:
        self._before = {name: read() for name, read in self._sources.items()}

    def stop(self, ops: float, seconds: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, read in self._sources.items():
            used = read() - self._before[name]
            out[f"{name}_cpu_us_per_op"] = round(1e6 * used / max(1.0, ops), 1)
            out[f"{name}_cpu_percent"] = round(100 * used / seconds, 1) if seconds > 0 else 0.0
        return out
