"""Who may do what on the queue service: authorized keys with roles (SPEC §5.3).

The file is OpenSSH ``authorized_keys`` with two extra options, ``roles`` and
``principal``::

    roles="producer",principal="indexer" ssh-falcon512 AAAA... indexer@host
    roles="consumer,admin" ssh-falcon512 AAAA... ops

A key listed without ``roles`` may authenticate and ``ping`` but nothing else. The
**principal** (who the key is, recorded as ``submitted_by``) is the ``principal``
option, else the key's comment, else ``unnamed``: 1-64 of ``A-Z a-z 0-9 _ . @ + -``, so
never a ``node:`` or ``peer:`` provenance. A line whose option is not such a name is
skipped with a warning. Of OpenSSH's options, ``from="pattern-list"`` and
``expiry-time`` are enforced (:meth:`AuthorizedKeys.lookup_from`) and the restrictions
in force for every key anyway (``restrict``, ``no-pty`` …) accepted; a line with any
other option is skipped with a warning, never half-applied. Only a key's first line
counts. The SSH
username a client sends must be empty, the principal, or :data:`DEFAULT_USERNAME`.
The file is re-read when it changes (modification or change time, size or inode), so
revoking a key needs no restart; a change that does not parse keeps the previous keys
and is logged once, not once per key offered.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
from asyncssh.pattern import HostPatternList

from sidecar.errors import Forbidden
from transport.keys import unsupported_algorithm
from transport.ssh_algorithms import PQSSHKey

log = logging.getLogger(__name__)

# What a client that does not know its principal sends as its SSH username.
DEFAULT_USERNAME = "qssh"
# No ':' anywhere, so no SSH client can hold a "node:"/"peer:" (or any future) prefix.
PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
# The principal of a key whose line has no principal option and no comment that is a name.
UNNAMED = "unnamed"


class Role(enum.StrEnum):
    PRODUCER = "producer"  # submit, submit_batch
    CONSUMER = "consumer"  # pop, lease, ack, release, subscribe
    ADMIN = "admin"  # stats, tier, peers
    PEER = "peer"  # relay: another sidecar relaying its broadcast messages (docs/relay.md)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated peer of one connection."""

    username: str  # what the client sent (checked by :func:`username_allowed`)
    fingerprint: str  # "SHA256:..." of the user key, as OpenSSH prints it
    key_algorithm: str
    roles: frozenset[Role]
    name: str  # the key's principal in authorized_keys (a peer's name)

    @property
    def submitted_by(self) -> str:
        """Provenance recorded with every message this peer submits: from the key."""
        return f"{self.name} {self.fingerprint}"

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
    principal: str
    # from="pattern-list" options (all must match) and the earliest expiry-time, if any
    from_patterns: tuple[HostPatternList, ...] = ()
    expires: float | None = None  # seconds since the epoch

    def expired(self, now: float) -> bool:
        """OpenSSH refuses a key once its expiry-time is in the past."""
        return self.expires is not None and self.expires < now

    def permits_from(self, source: str | None) -> bool:
        """Whether a connection from the address ``source`` passes every ``from=``
        pattern list, as sshd matches them without DNS (``UseDNS no``, its default):
        host name patterns are matched against the address. An unknown address never
        passes a ``from=`` option."""
        if not self.from_patterns:
            return True
        ip = peer_ip(source)
        if ip is None:
            return False
        return all(p.matches("", str(ip), ip) for p in self.from_patterns)


def peer_ip(source: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's address as sshd matches it: without an IPv6 scope, and an
    IPv4-mapped IPv6 address (a dual-stack listener) as the IPv4 address."""
    if not source:
        return None
    try:
        ip = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# Options we enforce; any other option skips its line (we never ignore a restriction).
ENFORCED_OPTIONS = ("roles", "principal", "from", "expiry-time")
# Restrictions already in force for every key (the service offers no pty, shell,
# forwarding of any kind, nor user rc), so accepted as flags, in any case.
ALWAYS_IN_FORCE = (
    "restrict",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-user-rc",
    "no-x11-forwarding",
)
EXPIRY_TIME = re.compile(r"\d{8}(?:\d{4}(?:\d{2})?)?[Zz]?")


def parse_expiry_time(value: str) -> float:
    """sshd(8)'s ``expiry-time``: ``YYYYMMDD[Z]`` or ``YYYYMMDDHHMM[SS][Z]``, in the
    system time zone, or in UTC with a ``Z``; seconds since the epoch."""
    if not EXPIRY_TIME.fullmatch(value):
        raise ValueError(f'expiry-time="{value}" is not YYYYMMDD[HHMM[SS]][Z]')
    digits = value.rstrip("Zz")
    try:
        when = datetime.strptime(digits.ljust(14, "0"), "%Y%m%d%H%M%S")
    except ValueError:
        raise ValueError(f'expiry-time="{value}" is not a date and time') from None
    if digits != value:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()  # a naive time is local, as sshd's mktime()


def restrictions_of(
    options: dict[str, object], where: str
) -> tuple[tuple[HostPatternList, ...], float | None] | None:
    """The ``from`` patterns and the expiry of a line; None (the line is skipped, with
    a warning) if it carries an option we do not enforce or a malformed one."""
    unsupported = [
        name
        for name, value in options.items()
        if name not in ENFORCED_OPTIONS and not (value is True and name.lower() in ALWAYS_IN_FORCE)
    ]
    if unsupported:
        log.warning(
            "%s: skipped, option %s not supported here (supported: %s; and the flags %s)",
            where,
            ", ".join(unsupported),
            ", ".join(ENFORCED_OPTIONS),
            ", ".join(ALWAYS_IN_FORCE),
        )
        return None
    patterns = options.get("from", [])
    if not isinstance(patterns, list) or not all(isinstance(p, HostPatternList) for p in patterns):
        log.warning('%s: skipped, from must be from="pattern,pattern"', where)
        return None
    expiries = options.get("expiry-time", [])
    if not isinstance(expiries, list):
        log.warning('%s: skipped, expiry-time must be expiry-time="YYYYMMDD[HHMM[SS]]"', where)
        return None
    try:
        times = [parse_expiry_time(str(value)) for value in expiries]
    except ValueError as exc:
        log.warning("%s: skipped, %s", where, exc)
        return None
    return tuple(patterns), min(times, default=None)


def username_allowed(username: str, principal: str) -> bool:
    """The SSH username is not provenance: it may only be empty, the key's principal
    or the documented default, so it can never claim to be someone else."""
    return username in ("", principal, DEFAULT_USERNAME)


def principal_of(options: dict[str, object], comment: str, where: str) -> str | None:
    """The ``principal="…"`` option, else the comment, else :data:`UNNAMED` (with a
    warning); None (the line is skipped, with a warning) if the option is not a name."""
    given = options.get("principal")
    if given is not None:
        names = given if isinstance(given, list) else [given]  # a bare flag is no name
        if isinstance(given, list) and len(names) == 1 and PRINCIPAL_NAME.fullmatch(str(names[0])):
            return str(names[0])
        log.warning(
            '%s: skipped, principal="%s" is not a name (1-64 of A-Z a-z 0-9 _ . @ + -)',
            where,
            ",".join(str(n) for n in names),
        )
        return None
    if PRINCIPAL_NAME.fullmatch(comment):
        return comment
    log.warning(
        '%s: the key\'s comment %r is not a name: its principal is "%s" (set principal="name"; '
        "a name is 1-64 of A-Z a-z 0-9 _ . @ + -, first a letter or digit)",
        where,
        comment,
        UNNAMED,
    )
    return UNNAMED


class AuthorizedKeys:
    """The keys allowed in, looked up by public key; reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int, int] | None = None
        self._by_key: dict[tuple[str, bytes], AuthorizedKey] = {}
        self.reload()

    @staticmethod
    def parse(text: str, where: str = "authorized_keys") -> dict[tuple[str, bytes], AuthorizedKey]:
        entries: dict[tuple[str, bytes], AuthorizedKey] = {}
        first_line: dict[tuple[str, bytes], int] = {}  # key -> the line that counts for it
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
            first = first_line.setdefault(key.identity, lineno)
            roles = parse_roles(entry.options.get("roles"), here)
            restrictions = restrictions_of(entry.options, here)
            if restrictions is None:
                continue
            principal = principal_of(entry.options, key.get_comment() or "", here)
            if principal is None:
                continue
            if first != lineno:
                # OpenSSH applies the first line of a key; a later one never widens it
                # (nor stands in for a first line that was skipped)
                log.warning(
                    "%s: skipped, the same key as line %d (only a key's first line counts)",
                    here,
                    first,
                )
                continue
            from_patterns, expires = restrictions
            if expires is not None and expires < time.time():
                log.warning("%s: the key's expiry-time has passed: it is refused", here)
            entries[key.identity] = AuthorizedKey(
                key, key.get_fingerprint("sha256"), roles, principal, from_patterns, expires
            )
        return entries

    def reload(self) -> None:
        """Re-read the file if it changed (modification or change time, size, inode)
        since the last attempt. A file that cannot be read or parsed raises, and the
        caller keeps the previous keys; its signature is recorded all the same, so the
        same broken file is neither re-parsed nor reported again until it changes."""
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            missing = (-1, -1, -1, exc.errno or 0)
            if missing == self._signature:
                return
            self._signature = missing
            raise
        signature = (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)
        if signature == self._signature:
            return
        self._signature = signature
        self._by_key = self.parse(self.path.read_text(), str(self.path))

    def lookup_from(self, key: asyncssh.SSHKey, source: str | None) -> AuthorizedKey | None:
        """The entry that lets ``key`` in from the address ``source``: listed, not
        expired, and passing its ``from=`` options. What the server authenticates by."""
        entry = self.lookup(key)
        if entry is None or not entry.permits_from(source):
            return None
        return entry

    def lookup(self, key: asyncssh.SSHKey) -> AuthorizedKey | None:
        """The entry of ``key`` if it is listed and not expired, wherever the peer is:
        ``from=`` needs the peer's address, so authenticate with :meth:`lookup_from`."""
        try:
            self.reload()
        except (OSError, ValueError) as exc:
            # Keep the last good set rather than locking everyone out mid-edit; said
            # once per change of the file (reload() does not retry an unchanged file).
            log.error("cannot reload %s, keeping previous keys: %s", self.path, exc)
        if not isinstance(key, PQSSHKey):
            return None
        entry = self._by_key.get(key.identity)
        if entry is None or entry.expired(time.time()):
            return None
        return entry

    def __len__(self) -> int:
        return len(self._by_key)
