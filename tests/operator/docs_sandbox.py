"""Where the docs' shell examples run: a directory laid out like a fresh clone (after
`make run`), in a network namespace of its own, so the documented default ports
(22222, 9615, …) are free whatever else this machine runs, with a real
``qssh-sidecar serve`` on its embedded defaults, as `make run` starts it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.subprocesses import REPO, START_TIMEOUT, child_env, log_messages

# what a fresh clone has that the examples read; examples/ is copied (the testnet
# writes its run directory inside it), the rest linked
LINKED = ("sidecar", "transport", "hardware", "bench", "systemd", "docs", "tests",
          "pyproject.toml", "Makefile", "README.md", "LICENSE")  # fmt: skip
COPIED = ("examples",)

# bring the namespace's loopback up (SIOCSIFFLAGS, IFF_UP | IFF_LOOPBACK | IFF_RUNNING),
# then hold the namespace open
_HOLDER = (
    "import fcntl, socket, struct, time\n"
    "s = socket.socket()\n"
    "fcntl.ioctl(s, 0x8914, struct.pack('16sH', b'lo', 0x1 | 0x8 | 0x40))\n"
    "print('up', flush=True)\n"
    "time.sleep(10**9)\n"
)


def namespaces_available() -> str | None:
    """None if this process may make a network namespace, else why not."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare/nsenter (util-linux) not installed"
    r = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, check=False)
    return None if r.returncode == 0 else f"cannot make a network namespace: {r.stderr.strip()}"


class Sandbox:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for name in LINKED:
            (root / name).symlink_to(REPO / name)
        for name in COPIED:
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("run"))
        (root / ".venv").symlink_to(Path(sys.prefix))  # what `make run` made
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", sys.executable, "-c", _HOLDER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        assert self.holder.stdout.readline().strip() == "up", "loopback not up in the namespace"
        self.env = child_env()
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log = root / "serve.log"

    def _enter(self) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--"]

    def run(self, script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``script`` in bash, in the sandbox and its namespace; stops at the first
        command that fails (``set -e``, ``pipefail``)."""
        return subprocess.run(
            [*self._enter(), "bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_daemon(self) -> None:
        """``qssh-sidecar serve`` on its embedded defaults, as `make run` runs it."""
        if self.daemon is not None:
            return
        with self.daemon_log.open("ab") as out:
            self.daemon = subprocess.Popen(
                [*self._enter(), str(self.root / ".venv" / "bin" / "qssh-sidecar"), "serve"],
                cwd=self.root,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while "\nready in " not in "\n" + self.output():
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not get ready:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def output(self) -> str:
        """What the daemon logged so far, each line reduced to its message."""
        return log_messages(self.daemon_log.read_text(errors="replace"))

    def raw_output(self) -> str:
        return self.daemon_log.read_text(errors="replace")

    def stop_daemon(self) -> None:
        daemon, self.daemon = self.daemon, None
        if daemon is None:
            return
        daemon.send_signal(signal.SIGTERM)
        try:
            assert daemon.wait(60) == 0, self.output()[-3000:]
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(10)

    def close(self) -> None:
        with contextlib.suppress(AssertionError):
            self.stop_daemon()
        # whatever an example left running in the namespace (a testnet whose `down`
        # was not reached) dies with it: kill every process inside it
        for pid in _pids_in_namespace(self.holder.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.holder.kill()
        self.holder.wait(10)


def _pids_in_namespace(holder: int) -> list[int]:
    try:
        ns = os.readlink(f"/proc/{holder}/ns/net")
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (holder, os.getpid()):
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{entry}/ns/net") == ns:
                found.append(int(entry))
    return found
