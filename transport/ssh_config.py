"""OpenSSH-style client configuration for ``qssh-queue`` (``~/.qssh/config``).

Supported keywords: ``Host``, ``HostName``, ``Port``, ``User``, ``IdentityFile``,
``UserKnownHostsFile``, ``StrictHostKeyChecking``, ``ConnectTimeout``. As in OpenSSH
the first value found for a keyword wins, so command-line ``-o`` options (applied
first) override the file, and specific ``Host`` blocks go before ``Host *``.
"""

from __future__ import annotations

import fnmatch
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from transport.auth import DEFAULT_USERNAME
from transport.host_pinning import StrictHostKeyChecking
from transport.protocol import DEFAULT_PORT

KEYWORDS = {
    "hostname": "HostName",
    "port": "Port",
    "user": "User",
    "identityfile": "IdentityFile",
    "userknownhostsfile": "UserKnownHostsFile",
    "stricthostkeychecking": "StrictHostKeyChecking",
    "connecttimeout": "ConnectTimeout",
    # tier 4 (docs/tiers.md): this client's ETSI 014 KME, as the master SAE
    "qkdkme": "QKDKME",
    "qkdsaeid": "QKDSAEID",
    "qkdpeersaeid": "QKDPeerSAEID",
    "qkdcertificate": "QKDCertificate",
    "qkdkey": "QKDKey",
    "qkdca": "QKDCA",
    "qkdrequired": "QKDRequired",
}
QKD_KEYWORDS = ("QKDKME", "QKDSAEID", "QKDPeerSAEID", "QKDCertificate", "QKDKey", "QKDCA")
_MULTI = {"IdentityFile"}


class SshConfigError(ValueError):
    pass


def qssh_home() -> Path:
    """``$QSSH_HOME`` (tests, containers) or ``~/.qssh``."""
    env = os.environ.get("QSSH_HOME")
    return Path(env) if env else Path.home() / ".qssh"


@dataclass(frozen=True)
class HostConfig:
    """Everything needed to reach one host, after config and options."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[Path, ...]
    known_hosts: Path
    strict_host_key_checking: StrictHostKeyChecking
    connect_timeout: float
    extra: dict[str, str] = field(default_factory=dict)


def _split_line(line: str, where: str) -> tuple[str, list[str]] | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if "=" in stripped.split(None, 1)[0]:
        key, _, rest = stripped.partition("=")
    else:
        parts = stripped.split(None, 1)
        key, rest = parts[0], parts[1] if len(parts) > 1 else ""
    try:
        values = shlex.split(rest.strip().lstrip("=").strip())
    except ValueError as exc:
        raise SshConfigError(f"{where}: {exc}") from None
    if not values:
        raise SshConfigError(f"{where}: {key} needs a value")
    return key.lower(), values


def host_matches(patterns: list[str], host: str) -> bool:
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(host, pattern.lstrip("!")):
            if negated:
                return False
            matched = True
    return matched


def parse_option(text: str) -> tuple[str, str]:
    """One ``-o Key=value`` (or ``Key value``) into (canonical key, value)."""
    parsed = _split_line(text, "-o")
    if parsed is None:
        raise SshConfigError(f"-o {text!r}: empty option")
    key, values = parsed
    if key not in KEYWORDS:
        raise SshConfigError(
            f"-o {text!r}: unsupported option (known: {', '.join(KEYWORDS.values())})"
        )
    return KEYWORDS[key], " ".join(values)


def read_config(path: Path, host: str, found: dict[str, list[str]], *, given: bool = False) -> None:
    """Add the values ``path`` gives for ``host`` to ``found`` (first wins).

    A missing default file is no config; a file given with ``-F`` must be read, as
    OpenSSH's ``ssh -F`` requires; one that exists but cannot be read is an error
    either way."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if not given:
            return
        raise SshConfigError(
            f"-F {path}: cannot read the config file (No such file or directory)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f"-F {path}" if given else str(path)
        raise SshConfigError(f"{where}: cannot read the config file ({why})") from None
    active = True
    for lineno, line in enumerate(text.splitlines(), 1):
        parsed = _split_line(line, f"{path}:{lineno}")
        if parsed is None:
            continue
        key, values = parsed
        if key == "host":
            active = host_matches(values, host)
            continue
        if key == "match":
            raise SshConfigError(f"{path}:{lineno}: Match blocks are not supported")
        if not active:
            continue
        name = KEYWORDS.get(key)
        if name is None:
            continue  # like OpenSSH's IgnoreUnknown for options we do not use
        if name in _MULTI:
            found.setdefault(name, []).extend(values)
        elif name not in found:
            found[name] = [" ".join(values)]


def resolve(
    destination: str,
    *,
    port: int | None = None,
    identity: str | None = None,
    options: list[str] | None = None,
    config_file: Path | None = None,
) -> HostConfig:
    """``[user@]host`` plus flags and config into a :class:`HostConfig`."""
    user: str | None = None
    alias = destination
    if "@" in destination:
        user, _, alias = destination.rpartition("@")
    found: dict[str, list[str]] = {}
    for opt in options or []:
        key, value = parse_option(opt)
        if key in _MULTI:
            found.setdefault(key, []).append(value)
        else:
            found.setdefault(key, [value])
    if port is not None:
        found["Port"] = [str(port)]
    if identity is not None:
        found.setdefault("IdentityFile", []).insert(0, identity)
    home = qssh_home()
    if config_file is not None:
        read_config(config_file, alias, found, given=True)
    else:
        read_config(home / "config", alias, found)

    def one(name: str, default: str) -> str:
        return found.get(name, [default])[0]

    port_text, timeout_text = one("Port", str(DEFAULT_PORT)), one("ConnectTimeout", "30")
    try:
        port_value = int(port_text)
    except ValueError:
        raise SshConfigError(f"Port: must be a number 1-65535, got {port_text!r}") from None
    try:
        timeout = float(timeout_text)
    except ValueError:
        timeout = -1.0
    if not 0 <= timeout < math.inf:
        raise SshConfigError(
            f"ConnectTimeout: must be a number of seconds >= 0, got {timeout_text!r}"
        )
    try:
        strict = StrictHostKeyChecking.parse(one("StrictHostKeyChecking", "yes"))
    except ValueError as exc:
        raise SshConfigError(str(exc)) from None
    if not 0 < port_value < 65536:
        raise SshConfigError(f"port {port_value} out of range")
    hostname = one("HostName", alias).replace("%h", alias)
    return HostConfig(
        alias=alias,
        hostname=hostname,
        port=port_value,
        user=user or one("User", DEFAULT_USERNAME),
        identity_files=tuple(Path(p).expanduser() for p in found.get("IdentityFile", [])),
        known_hosts=Path(one("UserKnownHostsFile", str(home / "known_hosts"))).expanduser(),
        strict_host_key_checking=strict,
        connect_timeout=timeout,
        extra={k: v[0] for k, v in found.items() if k.startswith("QKD") and v},
    )
