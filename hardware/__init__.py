"""Quantum and classical entropy hardware, health tests, the ETSI 014 KME client, tiers.

Knows nothing of SSH or the queue. The daemon uses `HardwareMonitor` and `Tier`.
"""

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
