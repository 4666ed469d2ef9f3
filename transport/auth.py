"""Who may do what on the queue service: authorized keys with roles (SPEC §5.3).

The file is OpenSSH ``authorized_keys`` with one extra option, ``roles``::

    roles="producer" ssh-falcon512 AAAA... node-alice
    roles="consumer,admin" ssh-falcon512 AAAA... ops

A key listed without ``roles`` may authenticate and ``ping`` but nothing else. The file
is re-read when it changes (modification time, size or inode), so revoking a key needs no restart.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from sidecar.errors import Forbidden
from transport.keys import unsupported_algorithm
from transport.ssh_algorithms import PQSSHKey

log = logging.getLogger(__name__)


class Role(enum.StrEnum):
    PRODUCER = "producer"  # submit, submit_batch
    CONSUMER = "consumer"  # pop, lease, ack, release, subscribe
    ADMIN = "admin"  # stats, tier, peers
    PEER = "peer"  # relay: another sidecar relaying its broadcast messages (docs/relay.md)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated peer of one connection."""

    username: str
    fingerprint: str  # "SHA256:..." of the user key, as OpenSSH prints it
    key_algorithm: str
    roles: frozenset[Role]
    name: str = ""  # the comment of the key's authorized_keys line (a peer's name)

    @property
    def submitted_by(self) -> str:
        """Provenance recorded with every message this peer submits."""
        return f"{self.username} {self.fingerprint}"

    def require(self, role: Role, method: str) -> None:
        if role not in self.roles:
            have = ",".join(sorted(self.roles)) or "none"
            raise Forbidden(
                f"'{method}' needs the {role.value} role; key {self.fingerprint} "
                f'has roles: {have} (set roles="..." in the server\'s authorized_keys)'
            )


def parse_roles(values: object, where: str) -> frozenset[Role]:
    """The ``roles`` option as asyncssh hands it over: a list of strings."""
    if values is None:
        return frozenset()
    if not isinstance(values, list):
        raise ValueError(f'{where}: roles option must be roles="role,role"')
    roles: set[Role] = set()
    for value in values:
        for part in str(value).split(","):
            name = part.strip()
            try:
                roles.add(Role(name))
            except ValueError:
                allowed = ", ".join(r.value for r in Role)
                raise ValueError(f"{where}: unknown role {name!r} (allowed: {allowed})") from None
    return frozenset(roles)


@dataclass(frozen=True, slots=True)
class AuthorizedKey:
    key: asyncssh.SSHKey
    fingerprint: str
    roles: frozenset[Role]
    comment: str


class AuthorizedKeys:
    """The keys allowed in, looked up by public key; reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._by_key: dict[tuple[str, bytes], AuthorizedKey] = {}
        self.reload()

    @staticmethod
    def parse(text: str, where: str = "authorized_keys") -> dict[tuple[str, bytes], AuthorizedKey]:
        entries: dict[tuple[str, bytes], AuthorizedKey] = {}
        for lineno, raw_line in enumerate(text.splitlines(), 1):
            line = raw_line.strip()
            if not line or line.startswith("#"):
                continue
            here = f"{where}:{lineno}"
            try:
                parsed = asyncssh.import_authorized_keys(line)
            except (ValueError, asyncssh.KeyImportError) as exc:
                unsupported = unsupported_algorithm(line.split())
                if unsupported is not None:
                    log.warning(
                        "%s: skipped, key algorithm %s is not supported here", here, unsupported
                    )
                else:
                    log.warning("%s: skipped, not a usable key line (%s)", here, exc)
                continue
            # One line gives one entry; asyncssh keeps no public accessor for it.
            entry = parsed._user_entries[0] if parsed._user_entries else None
            if entry is None or entry.key is None:
                log.warning("%s: skipped, certificates are not supported", here)
                continue
            key = entry.key
            if not isinstance(key, PQSSHKey):
                # asyncssh's server does not restrict user-key algorithms itself (SPEC §5.2)
                alg = key.get_algorithm()
                log.warning("%s: skipped, %s is not a post-quantum key algorithm", here, alg)
                continue
            roles = parse_roles(entry.options.get("roles"), here)
            entries[key.identity] = AuthorizedKey(
                key, key.get_fingerprint("sha256"), roles, key.get_comment() or ""
            )
        return entries

    def reload(self) -> None:
        stat = os.stat(self.path)
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self._signature:
            return
        self._by_key = self.parse(self.path.read_text(), str(self.path))
        self._signature = signature

    def lookup(self, key: asyncssh.SSHKey) -> AuthorizedKey | None:
        try:
            self.reload()
        except (OSError, ValueError) as exc:
            # Keep the last good set rather than locking everyone out mid-edit.
            log.error("cannot reload %s, keeping previous keys: %s", self.path, exc)
        if not isinstance(key, PQSSHKey):
            return None
        return self._by_key.get(key.identity)

    def __len__(self) -> int:
        return len(self._by_key)
