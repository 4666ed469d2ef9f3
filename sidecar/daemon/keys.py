"""Host key and local operator key, created on first start.

The host key is Falcon-512 (SPEC §5.2 default). On embedded defaults, or when no
authorized_keys file exists yet, the daemon also makes a key for the local operator
(producer, consumer and admin roles) and a known_hosts pinning this host, so the
printed ``qssh-queue`` commands work at once without trust-on-first-use.
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
from transport.keys import known_hosts_line, public_line, write_key_pair

from .config import ConfigError, DaemonConfig

HOST_KEY_ALG = "ssh-falcon512"
OPERATOR_ROLES = "producer,consumer,admin"


@dataclass(frozen=True)
class LoadedKey:
    key: asyncssh.SSHKey
    path: Path
    new: bool

    @property
    def fingerprint(self) -> str:
        return f"{self.key.get_algorithm()} {self.key.get_fingerprint('sha256')}"

    @property
    def public_line(self) -> str:
        return public_line(self.key)


def load_or_generate(path: Path, *, generate: bool, setting: str, comment: str) -> LoadedKey:
    if path.exists() or not generate:
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
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = asyncssh.generate_private_key(HOST_KEY_ALG, comment=comment)
    write_key_pair(key, path, force=True)  # 0600 from the start, fsync'd
    return LoadedKey(key, path, new=True)


def ensure_host_key(path: Path, *, generate: bool, instance: str = "") -> LoadedKey:
    return load_or_generate(
        path, generate=generate, setting="host_key", comment=f"qssh-sidecar {instance}".strip()
    )


@dataclass(frozen=True)
class LocalOperator:
    key_path: Path
    known_hosts: Path
    fingerprint: str
    new: bool


def operator_dir(cfg: DaemonConfig) -> Path:
    return cfg.data_dir / "operator"


def ensure_local_operator(cfg: DaemonConfig, host: LoadedKey) -> LocalOperator:
    """Operator key with every role in authorized_keys, and a known_hosts for this host."""
    d = operator_dir(cfg)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    op = load_or_generate(
        d / "id_falcon512",
        generate=True,
        setting="operator key",
        comment=f"operator@{cfg.instance}",
    )
    auth = cfg.authorized_keys_path
    line = f'roles="{OPERATOR_ROLES}" {op.public_line}'
    existing = auth.read_text() if auth.exists() else ""
    pub_b64 = op.public_line.split()[1]
    if pub_b64 not in existing:
        with auth.open("a") as f:
            if existing and not existing.endswith("\n"):
                f.write("\n")
            if not existing:
                f.write("# qssh-sidecar authorized keys: roles=producer,consumer,admin\n")
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    known = d / "known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", cfg.listen.port, host.key) + "\n")
    return LocalOperator(op.path, known, op.fingerprint, op.new)


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
        f"local operator key {op.key_path}: {op.fingerprint}" + (" (new)" if op.new else ""),
        "talk to it as the local operator (key with producer, consumer, admin roles):",
        f"  {base} submit gossip topic=blocks data=aGVsbG8=",
        f'  {base} submit \'{{"kind":"telemetry","name":"cpu","value":0.5}}\' --sync',
        f"  {base} depth",
        f"  {base} pop",
        f"  {base} tier",
    ]
