"""Host key pinning through an OpenSSH ``known_hosts`` file (SPEC §5.3, §5.4).

``StrictHostKeyChecking``: ``yes`` refuses unknown hosts, ``accept-new`` pins the key
of a host seen for the first time (appending it) and refuses a changed key, ``no``
pins new keys too but still refuses a changed key (as OpenSSH does for a mismatch
it cannot resolve safely: we never silently accept a different key).
"""

from __future__ import annotations

import enum
from pathlib import Path

import asyncssh

from sidecar.durable_fs import append_text, make_dirs
from sidecar.errors import ErrorCode, SidecarError
from transport.ssh_algorithms import PQSSHKey


class StrictHostKeyChecking(enum.StrEnum):
    YES = "yes"
    ACCEPT_NEW = "accept-new"
    NO = "no"

    @classmethod
    def parse(cls, value: str) -> StrictHostKeyChecking:
        lowered = value.strip().lower()
        if lowered in ("no", "off"):
            return cls.NO
        if lowered == "yes":
            return cls.YES
        if lowered == "accept-new":
            return cls.ACCEPT_NEW
        if lowered == "ask":
            raise ValueError(
                "StrictHostKeyChecking=ask is not supported: qssh-queue never prompts. Use "
                "yes (pin the host key in known_hosts first) or accept-new (pin on first use)"
            )
        raise ValueError(f"StrictHostKeyChecking must be yes, accept-new or no, not {value!r}")


class HostKeyError(SidecarError):
    """The server's host key is not the pinned one, or not pinned at all."""

    code = ErrorCode.FORBIDDEN


def _same_key(pinned: asyncssh.SSHKey, offered: asyncssh.SSHKey) -> bool:
    """The same key, also when pinned under another name of its algorithm
    (``ssh-mldsa44`` as OQS-OpenSSH writes it, ``ssh-mldsa-44`` as we do)."""
    if isinstance(pinned, PQSSHKey) and isinstance(offered, PQSSHKey):
        return pinned.identity == offered.identity
    return bool(pinned.public_data == offered.public_data)


def host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class HostKeyPinning:
    """Decides whether to trust a server host key; remembers why it refused."""

    def __init__(self, known_hosts: Path, policy: StrictHostKeyChecking) -> None:
        self.path = known_hosts
        self.policy = policy
        self.refusal: HostKeyError | None = None

    def _pinned(self, host: str, addr: str, port: int) -> list[asyncssh.SSHKey]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        if not text.strip():
            return []
        known = asyncssh.import_known_hosts(text)
        trusted = known.match(host, addr, port)[0]
        return list(trusted)

    def check(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        pinned = self._pinned(host, addr, port)
        fingerprint = key.get_fingerprint("sha256")
        if any(_same_key(k, key) for k in pinned):
            return True
        if pinned:
            self.refusal = HostKeyError(
                f"REMOTE HOST IDENTIFICATION HAS CHANGED for {host_pattern(host, port)}: "
                f"it offered {key.get_algorithm()} {fingerprint}, which is not the key pinned "
                f"in {self.path}. Someone could be intercepting the connection, or the host "
                "key was replaced. Refusing to connect; if the change is expected, remove the "
                "old line from that file."
            )
            return False
        if self.policy is StrictHostKeyChecking.YES:
            self.refusal = HostKeyError(
                f"no host key known for {host_pattern(host, port)} in {self.path} and "
                f"StrictHostKeyChecking=yes; offered {key.get_algorithm()} {fingerprint}. "
                "Pin it first, or connect once with -o StrictHostKeyChecking=accept-new."
            )
            return False
        self._append(host, port, key)
        return True

    def _append(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        make_dirs(self.path.parent)
        algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
        append_text(self.path, f"{host_pattern(host, port)} {algorithm} {blob}\n")
