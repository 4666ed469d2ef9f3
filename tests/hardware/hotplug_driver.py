"""Run under `umockdev-wrapper`: start a HardwareMonitor, plug and unplug a Quantis PCIe.

Prints one JSON line per tier change seen by a subscriber, then `done`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from hardware.config import HardwareConfig
from hardware.monitor import HardwareMonitor
from hardware.simulators import udev
from hardware.tier import TierDecision

QUANTIS_NODE = "/devices/pci0000:00/0000:00:1c.0/0000:03:00.0"


async def wait_for(events: list[tuple[int, str]], count: int) -> None:
    for _ in range(200):  # at most 20 s
        if len(events) >= count:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"timed out waiting for tier change {count}")


async def main() -> None:
    tb = udev.Testbed()
    cfg = HardwareConfig.from_dict(
        {"char_devices": [], "sample_bytes": 2048, "check_interval": 3600, "read_timeout": 1.0}
    )
    monitor = HardwareMonitor(cfg)
    events: list[tuple[int, str]] = []

    def on_change(old: TierDecision | None, new: TierDecision) -> None:
        print(json.dumps({"old": old and int(old.tier), "new": int(new.tier),
                          "reasons": list(new.reasons)}), flush=True)  # fmt: skip
        events.append((int(new.tier), "; ".join(new.reasons)))

    monitor.subscribe(on_change)
    await monitor.start()
    await wait_for(events, 1)
    tb.add(udev.quantis_pcie(os.urandom(4096)))
    await wait_for(events, 2)
    src = monitor.best_quantum_source()
    assert src is not None
    print(json.dumps({"quantum_bytes": len(src.read(1024))}), flush=True)
    src.close()
    tb.remove(QUANTIS_NODE + "/qrandom/qrandom0")
    tb.remove(QUANTIS_NODE)
    await wait_for(events, 3)
    print(json.dumps({"hotplug_events": monitor.hotplug_events}), flush=True)
    await monitor.stop()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
