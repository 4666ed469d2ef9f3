"""Host key and local operator key, created on first start.

The host key is Falcon-512 (SPEC §5.2 default). Keys are made after the hardware
probe: at tier 3 their seed is mixed (HKDF) from OS randomness and the health-tested
QRNG (:func:`transport.keys.generate_key`), and the start-up line says so.

On embedded defaults, or when no authorized_keys file exists yet, the daemon also
makes a key for the local operator (producer, consumer and admin roles) and a
known_hosts pinning this host, so the printed ``qssh-queue`` commands work at once
without trust-on-first-use.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncssh

import transport.ssh_algorithms  # noqa: F401 - registers the post-quantum key algorithms
from sidecar.durable_fs import append_text, make_dirs, replace_file
from transport.entropy import EntropyMixer
from transport.keys import (
    KeyFileError,
    generate_key,
    known_hosts_line,
    public_line,
    read_known_hosts,
    write_key_pair,
)

from .config import ConfigError, DaemonConfig
from .peers_config import PeerConfig

HOST_KEY_ALG = "ssh-falcon512"
OPERATOR_ROLES = "producer,consumer,admin"
OPERATOR_PRINCIPAL = "operator"  # so `qssh-queue operator@127.0.0.1` is this key's own name


@dataclass(frozen=True)
class LoadedKey:
    key: asyncssh.SSHKey
    path: Path
    new: bool
    qrng: str | None = None
    """The QRNG mixed into a new key's seed, if one was."""

    @property
    def fingerprint(self) -> str:
        return f"{self.key.get_algorithm()} {self.key.get_fingerprint('sha256')}"

    @property
    def origin(self) -> str:
        """`` (new)``, `` (new, seed mixed with QRNG …)`` or nothing, for start-up lines."""
        if not self.new:
            return ""
        return f" (new, seed mixed with QRNG {self.qrng})" if self.qrng else " (new)"

    @property
    def public_line(self) -> str:
        return public_line(self.key)


def existing_key(path: Path, *, generate: bool, setting: str) -> LoadedKey | None:
    """The key at ``path``; None when it is missing and may be generated. Every fault
    is a :class:`ConfigError`, found before anything starts."""
    if not path.exists() and generate:
        return None
    try:
        return LoadedKey(asyncssh.read_private_key(str(path)), path, new=False)
    except FileNotFoundError:
        raise ConfigError(
            f"{setting}: {path} does not exist (create one with "
            f"`qssh-sidecar keygen -t {HOST_KEY_ALG} -f {path}`)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{setting}: {path} is a directory, not a key file") from None
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {path} ({e.strerror})") from None
    except (asyncssh.KeyImportError, ValueError) as e:
        raise ConfigError(f"{setting}: {path} is not a usable private key ({e})") from None


def new_key(path: Path, *, comment: str, entropy: EntropyMixer | None = None) -> LoadedKey:
    """A new key at ``path`` (0600, fsync'd), its seed QRNG-mixed if ``entropy`` has one."""
    make_dirs(path.parent)
    mixed_before = entropy.mixed if entropy is not None else 0
    key = generate_key(HOST_KEY_ALG, comment, entropy=entropy)
    write_key_pair(key, path, force=True)
    qrng = entropy.source if entropy is not None and entropy.mixed > mixed_before else None
    return LoadedKey(key, path, new=True, qrng=qrng)


def check_peer_keys(peer: PeerConfig, where: str) -> None:
    """A peer's identity, known_hosts or pinned host_key line can be used; else a
    ConfigError (the link would retry for good, saying only that it is down)."""
    existing_key(peer.identity, generate=False, setting=f"{where}.identity")
    if peer.known_hosts is not None:
        try:
            read_known_hosts(peer.known_hosts)
        except KeyFileError as e:
            raise ConfigError(f"{where}.known_hosts: {e.message}") from None
    if peer.host_key is not None:
        try:
            asyncssh.import_known_hosts(peer.host_key.strip() + "\n")
        except ValueError as e:
            raise ConfigError(
                f"{where}.host_key: {peer.host_key!r} is not a known_hosts line ({e})"
            ) from None


def existing_host_key(path: Path, *, generate: bool) -> LoadedKey | None:
    return existing_key(path, generate=generate, setting="host_key")


def new_host_key(path: Path, *, instance: str, entropy: EntropyMixer | None) -> LoadedKey:
    return new_key(path, comment=f"qssh-sidecar {instance}".strip(), entropy=entropy)


@dataclass(frozen=True)
class LocalOperator:
    key_path: Path
    known_hosts: Path
    fingerprint: str
    origin: str


def operator_dir(cfg: DaemonConfig) -> Path:
    return cfg.data_dir / "operator"


def ensure_local_operator(
    cfg: DaemonConfig, host: LoadedKey, entropy: EntropyMixer | None = None
) -> LocalOperator:
    """Operator key with every role in authorized_keys, and a known_hosts for this host."""
    d = operator_dir(cfg)
    make_dirs(d)
    key_path = d / "id_falcon512"
    op = existing_key(key_path, generate=True, setting="operator key") or new_key(
        key_path, comment=f"operator@{cfg.instance}", entropy=entropy
    )
    auth = cfg.authorized_keys_path
    existing = auth.read_text() if auth.exists() else ""
    pub_b64 = op.public_line.split()[1]
    if pub_b64 not in existing:
        lead = "" if not existing or existing.endswith("\n") else "\n"
        if not existing:
            lead = "# qssh-sidecar authorized keys: roles=producer,consumer,admin\n"
        options = f'roles="{OPERATOR_ROLES}",principal="{OPERATOR_PRINCIPAL}"'
        append_text(auth, f"{lead}{options} {op.public_line}\n")
    known = d / "known_hosts"
    replace_file(known, (known_hosts_line("127.0.0.1", cfg.listen.port, host.key) + "\n").encode())
    return LocalOperator(op.path, known, op.fingerprint, op.origin)


def client_command() -> str:
    """How to run ``qssh-queue`` from here: on PATH, beside this interpreter, or as a module."""
    if shutil.which("qssh-queue"):
        return "qssh-queue"
    beside = Path(sys.executable).parent / "qssh-queue"
    if beside.exists():
        inside = beside.resolve().is_relative_to(Path.cwd().resolve())
        return shlex.quote(os.path.relpath(beside) if inside else str(beside))
    repo = shlex.quote(str(Path(__file__).resolve().parents[2]))
    return f"PYTHONPATH={repo} {shlex.quote(sys.executable)} -m transport.client_cli"


def operator_howto(cfg: DaemonConfig, op: LocalOperator, port: int) -> list[str]:
    """The exact commands to talk to this sidecar as the local operator."""
    base = (
        f"{client_command()} -p {port} -i {shlex.quote(str(op.key_path))} "
        f"-o UserKnownHostsFile={shlex.quote(str(op.known_hosts))} operator@127.0.0.1"
    )
    return [
        f"local operator key {op.key_path}: {op.fingerprint}{op.origin}",
        "talk to it as the local operator (key with producer, consumer, admin roles):",
        f"  {base} submit gossip topic=blocks data=aGVsbG8=",
        f'  {base} submit \'{{"kind":"telemetry","name":"cpu","value":0.5}}\' --sync',
        f"  {base} depth",
        f"  {base} pop",
        f"  {base} tier",
    ]
