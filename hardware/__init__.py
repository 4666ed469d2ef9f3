"""Quantum and classical entropy hardware, health tests, the ETSI 014 KME client, tiers.

Knows nothing of SSH or the queue. The daemon uses `HardwareMonitor` and `Tier`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hardware.config import HardwareConfig, HardwareConfigError, KMEConfig, SerialPortConfig
    from hardware.errors import (
        HardwareError,
        HealthTestFailure,
        KMEError,
        SourceDisconnected,
        SourceError,
        SourcePermissionDenied,
        SourceTimeout,
    )
    from hardware.health import HealthParameters, HealthTest, apt_cutoff, rct_cutoff
    from hardware.kme import Key, KeyStatus, KMEClient
    from hardware.monitor import HardwareMonitor, HealthCheckedSource
    from hardware.probe import evaluate, probe_devices
    from hardware.reports import DeviceReport, HealthVerdict, KMEStatusReport, SourceKind
    from hardware.sources import CharDeviceSource, EntropySource, RemoteSource, SerialSource
    from hardware.tier import Tier, TierDecision, decide

# Where each re-export lives, loaded on first use (PEP 562): ``hardware.tier`` alone
# (all the transport reads) does not load serial, udev or HTTP clients.
_HOMES = {
    "hardware.config": ("HardwareConfig", "HardwareConfigError", "KMEConfig", "SerialPortConfig"),
    "hardware.errors": (
        "HardwareError", "HealthTestFailure", "KMEError", "SourceDisconnected", "SourceError",
        "SourcePermissionDenied", "SourceTimeout",
    ),
    "hardware.health": ("HealthParameters", "HealthTest", "apt_cutoff", "rct_cutoff"),
    "hardware.kme": ("Key", "KeyStatus", "KMEClient"),
    "hardware.monitor": ("HardwareMonitor", "HealthCheckedSource"),
    "hardware.probe": ("evaluate", "probe_devices"),
    "hardware.reports": ("DeviceReport", "HealthVerdict", "KMEStatusReport", "SourceKind"),
    "hardware.sources": ("CharDeviceSource", "EntropySource", "RemoteSource", "SerialSource"),
    "hardware.tier": ("Tier", "TierDecision", "decide"),
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> object:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'hardware' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME_OF})


__all__ = [
    "CharDeviceSource",
    "DeviceReport",
    "EntropySource",
    "HardwareConfig",
    "HardwareConfigError",
    "HardwareError",
    "HardwareMonitor",
    "HealthCheckedSource",
    "HealthParameters",
    "HealthTest",
    "HealthTestFailure",
    "HealthVerdict",
    "KMEClient",
    "KMEConfig",
    "KMEError",
    "KMEStatusReport",
    "Key",
    "KeyStatus",
    "RemoteSource",
    "SerialPortConfig",
    "SerialSource",
    "SourceDisconnected",
    "SourceError",
    "SourceKind",
    "SourcePermissionDenied",
    "SourceTimeout",
    "Tier",
    "TierDecision",
    "apt_cutoff",
    "decide",
    "evaluate",
    "probe_devices",
    "rct_cutoff",
]  # fmt: skip
