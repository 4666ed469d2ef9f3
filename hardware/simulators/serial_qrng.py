"""A serial QRNG/TRNG on a pty with scripted behaviours.

The pty slave path (`/dev/pts/N`) is what a `SerialSource` opens. A pty has no modem
lines, so the `dtr` behaviour waits for the explicit line `SerialSource` sends on a pty
instead of the DTR signal (see docs/hardware.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import threading
import time
import tty
from enum import StrEnum

from hardware.sources import ONERNG_STOP, PTY_DTR_DROP, PTY_DTR_EMULATION


class Behaviour(StrEnum):
    GOOD = "good"
    STUCK = "stuck"
    BIASED = "biased"
    SLOW = "slow"
    STALL = "stall"
    DISCONNECT = "disconnect"
    DTR = "dtr"
    ONERNG = "onerng"
    PERMISSION = "permission"


class SerialQRNGSimulator:
    def __init__(
        self,
        behaviour: Behaviour | str = Behaviour.GOOD,
        *,
        slow_rate_bps: int = 2000,
        cut_after: int = 700,
        seed: int | None = 1,
    ) -> None:
        self.behaviour = Behaviour(behaviour)
        self.slow_rate_bps = slow_rate_bps
        self.cut_after = cut_after  # stall / disconnect after this many bytes
        self._rng = random.Random(seed)  # noqa: S311 - reproducible bias, not secrets
        self._master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        # Like a USB device, stream only while a reader has the port open: with no
        # slave fd open the master polls POLLHUP, so the simulator can tell.
        os.close(slave)
        self.sent = 0
        self.streaming = self.behaviour not in (Behaviour.DTR, Behaviour.ONERNG)
        self.commands: list[bytes] = []
        self._inbox = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.path}", daemon=True)
        if self.behaviour is Behaviour.PERMISSION:
            os.chmod(self.path, 0)

    def __enter__(self) -> SerialQRNGSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        os.set_blocking(self._master, False)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):  # disconnect already closed the master
            os.close(self._master)

    def _chunk(self, n: int) -> bytes:
        b = self.behaviour
        if b is Behaviour.STUCK:
            return b"\x42" * n
        if b is Behaviour.BIASED:  # half of all bytes are 0x00: fails RCT and APT
            rnd = self._rng
            return bytes(0 if rnd.random() < 0.5 else rnd.randrange(256) for _ in range(n))
        return os.urandom(n)

    def _handle_input(self, data: bytes) -> None:
        self._inbox += data
        while b"\n" in self._inbox:
            line, self._inbox = self._inbox.split(b"\n", 1)
            line += b"\n"
            self.commands.append(line)
            if self.behaviour is Behaviour.DTR:
                if line == PTY_DTR_EMULATION:
                    self.streaming = True
                elif line == PTY_DTR_DROP:
                    self.streaming = False
            elif self.behaviour is Behaviour.ONERNG:
                if line == b"cmdO\n":
                    self.streaming = True
                elif line == ONERNG_STOP:
                    self.streaming = False

    def _run(self) -> None:
        m = self._master
        poller = select.poll()
        poller.register(m, select.POLLIN)
        while not self._stop.is_set():
            want_write = self.streaming
            if self.behaviour is Behaviour.STALL and self.sent >= self.cut_after:
                want_write = False
            poller.modify(m, select.POLLIN | (select.POLLOUT if want_write else 0))
            events = poller.poll(50)
            mask = events[0][1] if events else 0
            if mask & select.POLLIN:  # before HUP: a closing reader's last command
                with contextlib.suppress(OSError):
                    self._handle_input(os.read(m, 4096))
            if mask & select.POLLHUP:  # nobody has the port open
                time.sleep(0.01)
                continue
            if not mask & select.POLLOUT:
                continue
            n = 1024
            if self.behaviour is Behaviour.SLOW:
                n = 64
            if self.behaviour in (Behaviour.STALL, Behaviour.DISCONNECT):
                n = min(n, self.cut_after - self.sent)
            try:
                self.sent += os.write(m, self._chunk(n))
            except BlockingIOError:
                continue
            except OSError:
                time.sleep(0.01)
                continue
            if self.behaviour is Behaviour.DISCONNECT and self.sent >= self.cut_after:
                time.sleep(0.05)  # let the reader take what was sent, then unplug
                os.close(m)
                return
            if self.behaviour is Behaviour.SLOW:
                time.sleep(64 / self.slow_rate_bps)


def main() -> None:
    ap = argparse.ArgumentParser(description="Serial QRNG simulator on a pty (for demos)")
    ap.add_argument("behaviour", choices=[b.value for b in Behaviour], default="good", nargs="?")
    ap.add_argument("--seconds", type=float, default=3600.0)
    args = ap.parse_args()
    with SerialQRNGSimulator(args.behaviour) as sim:
        handshake = {Behaviour.DTR: "dtr", Behaviour.ONERNG: "onerng"}.get(sim.behaviour, "none")
        print(
            f'[[hardware.serial_ports]]\npath = "{sim.path}"\nkind = "quantum_local"\n'
            f'handshake = "{handshake}"\nsimulated = true',
            flush=True,
        )
        time.sleep(args.seconds)


if __name__ == "__main__":
    main()
