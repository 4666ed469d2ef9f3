"""udev device trees for umockdev: Quantis USB/PCIe, TrueRNG, OneRNG.

`describe(...)` returns umockdev-record text for `umockdev-run --device FILE`.
`Testbed` drives libumockdev through ctypes (no GObject introspection needed) to add
and remove devices at run time, which emits real uevents to pyudev monitors; it works
only inside `umockdev-wrapper` (the preload library must be active).
"""

from __future__ import annotations

import ctypes
import os

PCI_PARENT = "/devices/pci0000:00/0000:00:1c.0"
USB_PARENT = "/devices/pci0000:00/0000:00:14.0/usb1"


def _node_content(data: bytes) -> str:
    return data.hex().upper()  # umockdev parses upper-case hex only


def quantis_pcie(
    data: bytes, *, device: str = "0002", with_parent: bool = True, index: int = 0
) -> str:
    """A Quantis PCIe card and its /dev/qrandomN node (contents: `data`).

    `with_parent=False` gives the node alone, as a look-alike driver would create it.
    """
    pci = f"{PCI_PARENT}/0000:0{3 + index}:00.0"
    name = f"qrandom{index}"
    node = f"{pci}/qrandom/{name}" if with_parent else f"/devices/virtual/qrandom/{name}"
    parts = []
    if with_parent:
        parts.append(
            f"P: {pci}\nE: SUBSYSTEM=pci\nE: DRIVER=quantis\nE: PCI_ID=1E89:{device.upper()}\n"
            f"A: vendor=0x1e89\nA: device=0x{device}\n"
        )
    parts.append(
        f"P: {node}\nN: {name}={_node_content(data)}\nE: DEVNAME=/dev/{name}\n"
        f"E: SUBSYSTEM=qrandom\nE: MAJOR=240\nE: MINOR={index}\n"
    )
    return "\n".join(parts)


def usb_device(
    vid: str, pid: str, product: str, *, port: str = "1-1", tty: str | None = None,
    serial: str = "SIM0001", data: bytes = b"",
) -> str:  # fmt: skip
    usb = f"{USB_PARENT}/{port}"
    parts = [
        f"P: {usb}\nE: SUBSYSTEM=usb\nE: DEVTYPE=usb_device\nE: DRIVER=usb\n"
        f"A: idVendor={vid}\nA: idProduct={pid}\nA: product={product}\nA: serial={serial}\n"
    ]
    if tty:
        intf = f"{usb}/{port}:1.0"
        parts.append(f"P: {intf}\nE: SUBSYSTEM=usb\nE: DEVTYPE=usb_interface\nE: DRIVER=cdc_acm\n")
        parts.append(
            f"P: {intf}/tty/{tty}\nN: {tty}{'=' + _node_content(data) if data else ''}\n"
            f"E: DEVNAME=/dev/{tty}\n"
            "E: SUBSYSTEM=tty\nE: MAJOR=166\nE: MINOR=0\n"
        )
    return "\n".join(parts)


def quantis_usb() -> str:
    return usb_device("0aba", "0102", "Quantis USB", port="1-2", serial="Q0001")


def truerng(port: str = "1-3", tty: str = "ttyACM0") -> str:
    return usb_device("04d8", "f5fe", "TrueRNG", port=port, tty=tty)


def onerng(port: str = "1-4", tty: str = "ttyACM1") -> str:
    return usb_device("1d50", "6086", "OneRNG", port=port, tty=tty)


def generic_ftdi(port: str = "1-5", tty: str = "ttyUSB0") -> str:
    return usb_device("0403", "6015", "FT230X Basic UART", port=port, tty=tty)


def infinite_noise(port: str = "1-6", tty: str = "ttyUSB1") -> str:
    return usb_device("0403", "6015", "Infinite Noise TRNG", port=port, tty=tty)


class _GError(ctypes.Structure):
    _fields_ = [("domain", ctypes.c_uint32), ("code", ctypes.c_int), ("message", ctypes.c_char_p)]


class Testbed:
    """libumockdev's testbed through ctypes; call from inside `umockdev-wrapper`."""

    def __init__(self) -> None:
        if "umockdev" not in os.environ.get("LD_PRELOAD", ""):
            raise RuntimeError("run under umockdev-wrapper (LD_PRELOAD of libumockdev-preload)")
        lib = ctypes.CDLL("libumockdev.so.0")
        lib.umockdev_testbed_new.restype = ctypes.c_void_p
        lib.umockdev_testbed_add_from_string.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_void_p,
        ]
        lib.umockdev_testbed_add_from_string.restype = ctypes.c_int
        lib.umockdev_testbed_uevent.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.umockdev_testbed_remove_device.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._lib = lib
        self._tb = lib.umockdev_testbed_new()

    def add(self, description: str) -> None:
        """Add devices (emits `add` uevents)."""
        err = ctypes.POINTER(_GError)()
        if not self._lib.umockdev_testbed_add_from_string(
            self._tb, description.encode(), ctypes.byref(err)
        ):
            why = err.contents.message.decode() if err else "unknown error"
            raise RuntimeError(f"umockdev rejected the device description: {why}")

    def remove(self, sys_path: str) -> None:
        """Emit a `remove` uevent and delete the device from the testbed."""
        path = sys_path if sys_path.startswith("/sys") else "/sys" + sys_path
        self._lib.umockdev_testbed_uevent(self._tb, path.encode(), b"remove")
        self._lib.umockdev_testbed_remove_device(self._tb, path.encode())
