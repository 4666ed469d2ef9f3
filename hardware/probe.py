"""Find entropy hardware (pyudev, no udev daemon needed), sample it, health-test it."""

from __future__ import annotations

import asyncio
import glob
import os
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyudev

from hardware.classify import QUANTIS_PCIE, Model, classify_usb, is_quantis_pci
from hardware.config import HardwareConfig, KMEConfig
from hardware.errors import KMEError, SourceError, SourcePermissionDenied, SourceTimeout
from hardware.health import HealthTest
from hardware.kme import KMEClient
from hardware.reports import DeviceReport, HealthVerdict, KMEStatusReport, SourceKind
from hardware.sources import CharDeviceSource, EntropySource, RemoteSource, SerialSource
from hardware.tier import TierDecision, decide


@dataclass
class Found:
    """A device before sampling: its report plus how to open it."""

    report: DeviceReport
    open_source: Callable[[], EntropySource] | None


def _attr(dev: Any, name: str) -> str | None:
    try:
        value = dev.attributes.get(name)
    except (KeyError, OSError):
        return None
    if value is None:
        return None
    return value.decode(errors="replace").strip() if isinstance(value, bytes) else str(value)


def _driver(dev: Any | None) -> str | None:
    if dev is None:
        return None
    return dev.driver or dev.properties.get("DRIVER")  # type: ignore[no-any-return]


def _usb_report(usb: Any, model: Model, node: Any | None) -> DeviceReport:
    return DeviceReport(
        kind=model.kind,
        model=model.name,
        path=node.device_node if node is not None else None,
        vendor_id=_attr(usb, "idVendor"),
        product_id=_attr(usb, "idProduct"),
        product=_attr(usb, "product"),
        serial=_attr(usb, "serial"),
        sys_path=(node or usb).sys_path,
        driver=(_driver(node.parent) if node is not None else None) or _driver(usb),
        expected_rate_bps=model.expected_rate_bps,
    )


def enumerate_udev() -> list[Found]:
    """Every known RNG udev sees; an import or sysfs failure yields an empty list."""
    found: list[Found] = []
    try:
        ctx = pyudev.Context()
        with_node: set[str] = set()
        for subsystem in ("tty", "usbmisc"):
            for node in ctx.list_devices(subsystem=subsystem):
                usb = node.find_parent("usb", "usb_device")
                if usb is None or node.device_node is None:
                    continue
                model = classify_usb(
                    _attr(usb, "idVendor"), _attr(usb, "idProduct"), _attr(usb, "product")
                )
                if model is None:
                    continue
                with_node.add(usb.sys_path)
                rep = _usb_report(usb, model, node)
                path, handshake = node.device_node, model.handshake
                if subsystem == "tty":
                    found.append(Found(rep, partial(SerialSource, path, handshake)))
                else:
                    found.append(Found(rep, partial(CharDeviceSource, path)))
        for usb in ctx.list_devices(subsystem="usb", DEVTYPE="usb_device"):
            model = classify_usb(
                _attr(usb, "idVendor"), _attr(usb, "idProduct"), _attr(usb, "product")
            )
            if model is None or usb.sys_path in with_node:
                continue
            rep = _usb_report(usb, model, None)
            rep.error = "no device node: needs the vendor's libusb driver (not supported here)"
            found.append(Found(rep, None))
        for node in ctx.list_devices(subsystem="qrandom"):
            pci = node.find_parent("pci")
            path = node.device_node
            quantis = pci is not None and is_quantis_pci(_attr(pci, "vendor"), _attr(pci, "device"))
            rep = DeviceReport(
                kind=QUANTIS_PCIE.kind if quantis else SourceKind.UNVERIFIED,
                model=QUANTIS_PCIE.name if quantis else "qrandom node without Quantis PCI parent",
                path=path,
                vendor_id=_attr(pci, "vendor") if pci is not None else None,
                product_id=_attr(pci, "device") if pci is not None else None,
                sys_path=node.sys_path,
                driver=_driver(pci),
                expected_rate_bps=QUANTIS_PCIE.expected_rate_bps if quantis else None,
            )
            found.append(Found(rep, partial(CharDeviceSource, path) if path else None))
        for node in ctx.list_devices(subsystem="misc", sys_name="hw_random"):
            found.append(_hwrng(node.device_node or "/dev/hwrng", node.sys_path))
    except Exception as exc:  # a broken sysfs must not stop the probe: report it
        rep = DeviceReport(SourceKind.UNVERIFIED, "udev", error=f"udev enumeration failed: {exc}")
        found.append(Found(rep, None))
    return found


def _hwrng(path: str, sys_path: str | None = None) -> Found:
    current = None
    try:
        with open("/sys/class/misc/hw_random/rng_current") as f:
            current = f.read().strip()
    except OSError:
        pass
    model = f"kernel hwrng ({current})" if current else "kernel hwrng"
    rep = DeviceReport(SourceKind.TRNG, model, path=path, sys_path=sys_path, driver=current)
    return Found(rep, partial(CharDeviceSource, path))


def configured(config: HardwareConfig, known_paths: set[str]) -> list[Found]:
    found: list[Found] = []
    for pattern in config.char_devices:
        for path in sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]:
            if path in known_paths or not os.path.exists(path):
                continue
            known_paths.add(path)
            if os.path.basename(path) == "hwrng":
                found.append(_hwrng(path))
                continue
            rep = DeviceReport(
                SourceKind.UNVERIFIED, "character device without a known parent", path=path
            )
            found.append(Found(rep, partial(CharDeviceSource, path)))
    for port in config.serial_ports:
        if port.path in known_paths:
            continue
        known_paths.add(port.path)
        kind = port.kind or SourceKind.UNVERIFIED
        if kind is SourceKind.QUANTUM_LOCAL and not port.simulated:
            kind = SourceKind.UNVERIFIED  # a quantum claim needs udev ids or an explicit simulator
        handshake = "none" if port.handshake == "auto" else port.handshake
        rep = DeviceReport(
            kind,
            port.model or "configured serial RNG",
            path=port.path,
            expected_rate_bps=port.expected_rate_bps,
            simulated=port.simulated,
        )
        found.append(Found(rep, partial(SerialSource, port.path, handshake, port.baudrate)))
    for ep in config.remote_endpoints:
        rep = DeviceReport(SourceKind.QUANTUM_REMOTE, ep.name, path=ep.url,
                           expected_rate_bps=ep.expected_rate_bps)  # fmt: skip
        found.append(Found(rep, partial(RemoteSource, ep.url)))
    return found


def sample(found: Found, config: HardwareConfig, sample_bytes: int | None = None) -> DeviceReport:
    """Open, read `sample_bytes`, run the startup health test, measure the rate."""
    rep = found.report
    if found.open_source is None:
        return rep
    n = sample_bytes if sample_bytes is not None else config.sample_bytes
    source = found.open_source()
    try:
        source.open()
        rep.readable = True
        start = time.monotonic()
        data = source.read(n, config.read_timeout)
        elapsed = time.monotonic() - start
    except SourcePermissionDenied as exc:
        rep.readable = False
        rep.error = str(exc)
        return rep
    except SourceTimeout as exc:
        rep.error = str(exc)
        rep.bytes_sampled = exc.received
        rep.rate_bps = exc.received / config.read_timeout
        return rep
    except SourceError as exc:
        rep.error = str(exc)
        return rep
    except Exception as exc:  # a driver quirk is reported on its device, never a crash
        rep.error = f"unexpected {type(exc).__name__}: {exc}"
        return rep
    finally:
        source.close()
    rep.bytes_sampled = len(data)
    rep.rate_bps = len(data) / elapsed if elapsed > 0 else None
    if rep.expected_rate_bps and rep.rate_bps is not None:
        rep.rate_ok = rep.rate_bps >= rep.expected_rate_bps * config.min_rate_fraction
    test = HealthTest(config.health)
    test.feed(data)
    rep.health_counts = test.counts.as_dict()
    if test.counts.failed:
        rep.health = HealthVerdict.FAIL
    elif len(data) >= config.health.startup_samples:
        rep.health = HealthVerdict.PASS
    else:
        minimum = config.health.startup_samples
        rep.error = f"sample of {len(data)} bytes is below the startup minimum {minimum}"
    return rep


def probe_found(
    config: HardwareConfig,
    sample_bytes: int | None = None,
    skip: Collection[str] = (),
) -> list[Found]:
    """Enumerate and sample; devices whose path is in `skip` (in use) are not opened."""
    found = enumerate_udev() if config.use_udev else []
    known = {f.report.path for f in found if f.report.path}
    found += configured(config, known)
    to_sample = [f for f in found if f.report.path not in skip]
    if to_sample:  # in parallel: a stalled device costs one read timeout, not one per device
        workers = min(8, len(to_sample))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool:
            list(pool.map(lambda f: sample(f, config, sample_bytes), to_sample))
    return found


def probe_devices(config: HardwareConfig, sample_bytes: int | None = None) -> list[DeviceReport]:
    return [f.report for f in probe_found(config, sample_bytes)]


async def kme_status(cfg: KMEConfig) -> KMEStatusReport:
    """Calls `status` only: a probe must not spend keys."""
    rep = KMEStatusReport(url=cfg.url, simulated=cfg.simulated)
    try:
        async with KMEClient(
            cfg.url, cert=cfg.cert, key=cfg.key, ca=cfg.ca, timeout=cfg.timeout
        ) as c:
            st = await c.status(cfg.slave_sae_id)
    except KMEError as exc:
        rep.error = f"{type(exc).__name__}: {exc}"
        return rep
    except (OSError, ValueError) as exc:  # unreadable cert/key/CA files
        rep.error = f"KME client setup failed: {exc}"
        return rep
    rep.reachable = True
    rep.stored_key_count = st.stored_key_count
    rep.key_size, rep.max_key_size, rep.min_key_size = st.key_size, st.max_key_size, st.min_key_size
    rep.source_kme_id, rep.target_kme_id = st.source_KME_ID, st.target_KME_ID
    if st.max_key_size < cfg.min_key_size:
        rep.error = (
            f"KME keys are at most {st.max_key_size} bits, below the required {cfg.min_key_size}"
        )
    return rep


async def evaluate_found(
    config: HardwareConfig,
    sample_bytes: int | None = None,
    in_use: Mapping[str, Callable[[DeviceReport], None]] | None = None,
) -> tuple[TierDecision, list[Found]]:
    """Probe and decide; a device in `in_use` is described by its callback, not re-opened."""
    in_use = in_use or {}
    found = await asyncio.to_thread(probe_found, config, sample_bytes, set(in_use))
    for f in found:
        describe_live = in_use.get(f.report.path or "")
        if describe_live is not None:
            describe_live(f.report)
    kme = await kme_status(config.kme) if config.kme else None
    devices = [f.report for f in found]
    return decide(devices, kme, floor=config.floor, ceiling=config.ceiling), found


async def evaluate(config: HardwareConfig, sample_bytes: int | None = None) -> TierDecision:
    return (await evaluate_found(config, sample_bytes))[0]
