"""Mount and power-cut ``powercut_fs`` (kept apart so importing it needs no libfuse)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.subprocesses import REPO, child_env


class Mount:
    """A running PowerCutFS process on ``mountpoint``."""

    def __init__(self, backing: Path, mountpoint: Path, log: Path) -> None:
        self.mountpoint = mountpoint
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.powercut_fs", str(backing), str(mountpoint)],
                cwd=REPO,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"FUSE mount failed: {log.read_text()[-2000:]}")
            time.sleep(0.02)

    def cut(self) -> None:
        """Power cut: the filesystem process dies, everything not durable is gone."""
        self.proc.kill()
        self.proc.wait(30)
        unmount(self.mountpoint)


def unmount(mountpoint: Path) -> None:
    for tool in ("fusermount", "fusermount3"):
        if shutil.which(tool):
            subprocess.run([tool, "-u", "-z", str(mountpoint)], timeout=30, check=False)
            break
    else:
        subprocess.run(["umount", "-l", str(mountpoint)], timeout=30, check=False)


def fuse_unavailable() -> str | None:
    """Why a FUSE filesystem cannot be mounted here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not accessible to this user"
    if shutil.which("fusermount") is None and shutil.which("fusermount3") is None:
        return "fusermount (fuse3 / libfuse2) not installed"
    try:
        import fuse  # noqa: F401, PLC0415
    except (ImportError, OSError) as exc:
        return f"fusepy cannot load libfuse: {exc}"
    return None
