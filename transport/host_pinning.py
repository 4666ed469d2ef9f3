"""Host key pinning through an OpenSSH ``known_hosts`` file (SPEC §5.3, §5.4).

``StrictHostKeyChecking``: ``yes`` refuses unknown hosts, ``accept-new`` pins the key
of a host seen for the first time (appending it) and refuses a changed key, ``no``
pins new keys too but still refuses a changed key (as OpenSSH does for a mismatch
it cannot resolve safely: we never silently accept a different key). A key that the
file marks ``@revoked`` is refused under every mode, as OpenSSH refuses it ("REVOKED
HOST KEY"), whatever host pattern its line names, and is never pinned.
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


def _revoked_keys(text: str) -> list[asyncssh.SSHKey]:
    """The keys of every ``@revoked`` line, whatever host pattern it names (OpenSSH:
    such a key "must not ever be accepted"). The file is checked by asyncssh first."""
    revoked = []
    for raw in text.splitlines():
        fields = raw.strip().split(None, 2)
        if len(fields) == 3 and fields[0] == "@revoked":
            try:
                revoked.append(asyncssh.import_public_key(fields[2]))
            except asyncssh.KeyImportError:
                continue  # a certificate or an unknown algorithm: never offered to us
    return revoked


def host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class HostKeyPinning:
    """Decides whether to trust a server host key; remembers why it refused."""

    def __init__(self, known_hosts: Path, policy: StrictHostKeyChecking) -> None:
        self.path = known_hosts
        self.policy = policy
        self.refusal: HostKeyError | None = None

    def _read(
        self, host: str, addr: str, port: int
    ) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
        """The keys pinned for this host, and every revoked key."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return [], []
        if not text.strip():
            return [], []
        known = asyncssh.import_known_hosts(text)
        trusted = known.match(host, addr, port)[0]
        return list(trusted), _revoked_keys(text)

    def check(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        try:
            pinned, revoked = self._read(host, addr, port)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.refusal = HostKeyError(
                f"known_hosts file {self.path} cannot be used ({why}); refusing to connect"
            )
            return False
        fingerprint = key.get_fingerprint("sha256")
        if any(_same_key(k, key) for k in revoked):
            self.refusal = HostKeyError(
                f"REVOKED HOST KEY for {host_pattern(host, port)}: it offered "
                f"{key.get_algorithm()} {fingerprint}, which {self.path} marks @revoked. "
                "This could mean that a stolen key is being used to impersonate this host. "
                "Refusing to connect."
            )
            return False
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
