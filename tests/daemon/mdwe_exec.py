"""Run a command with Memory-Deny-Write-Execute, as systemd's ``MemoryDenyWriteExecute=yes``.

    python tests/daemon/mdwe_exec.py COMMAND [ARG ...]

Sets ``PR_SET_MDWE`` (Linux >= 6.3; newer systemd uses the same prctl, older ones a
seccomp filter refusing the same calls): no mapping may be writable and executable,
nor become executable after being writable. The setting survives ``execve`` and is
inherited by children. Exits 77 when the kernel lacks it.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
UNSUPPORTED = 77


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print(f"mdwe_exec: PR_SET_MDWE: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return UNSUPPORTED
    os.execv(sys.argv[1], sys.argv[1:])  # does not return
    return 1


if __name__ == "__main__":
    sys.exit(main())
