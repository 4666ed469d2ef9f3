"""A process's own memory from /proc (Linux), and the gossip messages the memory
benches queue. Imports nothing of the queue, so a bench can still choose which
checkout's `sidecar` it loads (bench/recovery.py --tree)."""

from __future__ import annotations

import base64
import os

import orjson


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def message_json(i: int, payload: int) -> bytes:
    """A gossip message whose canonical form is about `payload` bytes (distinct data)."""
    raw = max(1, (payload - 40) * 3 // 4)
    data = (i.to_bytes(8, "big") * (raw // 8 + 1))[:raw]
    return orjson.dumps({"kind": "gossip", "topic": "t", "data": base64.b64encode(data).decode()})
