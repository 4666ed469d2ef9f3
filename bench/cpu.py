"""CPU time of processes, read from /proc: what each side of a benchmark spends.

`tree_seconds(pid)` counts a process and its live descendants (sshd forks a child per
connection); `machine_seconds()` the whole machine's busy time, kernel threads and
interrupts included; `Meter` takes the CPU of named sources around one timed run.
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


def machine_seconds() -> float:
    """Busy CPU time of the whole machine so far, summed over its cores: user, nice,
    system, irq and softirq from /proc/stat (not idle, iowait or steal). It counts what
    no process is charged with: the loopback network stack in softirq, jbd2's journal
    commits, the block layer's kworkers."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = f.readline().split()  # "cpu  user nice system idle iowait irq softirq steal"
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / TICK


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
