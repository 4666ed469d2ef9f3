"""~/.qssh/config resolution and authorized_keys roles (pure parsing)."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from sidecar.errors import Forbidden
from tests.service.conftest import Keys, authorized_keys_text
from transport.auth import AuthorizedKeys, Principal, Role
from transport.host_pinning import StrictHostKeyChecking
from transport.ssh_config import SshConfigError, resolve


def test_config_host_block_gives_hostname_port_user_identity(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text(
        "Host alice\n  HostName 127.0.0.1\n  Port 2300\n  User ops\n  IdentityFile ~/k1\n"
        "Host *\n  Port 9999\n  StrictHostKeyChecking accept-new\n"
    )
    hc = resolve("alice", config_file=cfg)
    assert (hc.hostname, hc.port, hc.user) == ("127.0.0.1", 2300, "ops")
    assert hc.identity_files == (Path("~/k1").expanduser(),)
    assert hc.strict_host_key_checking is StrictHostKeyChecking.ACCEPT_NEW


def test_flags_and_options_win_over_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("Host *\n  Port 2300\n  User ops\n  StrictHostKeyChecking yes\n")
    hc = resolve(
        "carol@bob",
        port=2400,
        identity="/k",
        options=["StrictHostKeyChecking=no", "UserKnownHostsFile /tmp/kh"],
        config_file=cfg,
    )
    assert (hc.hostname, hc.port, hc.user) == ("bob", 2400, "carol")
    assert hc.identity_files[0] == Path("/k")
    assert hc.strict_host_key_checking is StrictHostKeyChecking.NO
    assert hc.known_hosts == Path("/tmp/kh")


def test_negated_pattern_excludes_a_host(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("Host * !charlie\n  Port 2500\n")
    assert resolve("bob", config_file=cfg).port == 2500
    assert resolve("charlie", config_file=cfg).port != 2500


@pytest.mark.parametrize(
    "option", ["Bogus=1", "Port=notanumber", "StrictHostKeyChecking=maybe", "Port=70000"]
)
def test_bad_options_are_config_errors(option: str, tmp_path: Path) -> None:
    with pytest.raises(SshConfigError):
        resolve("h", options=[option], config_file=tmp_path / "none")


def test_roles_come_from_the_authorized_keys_option(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(authorized_keys_text(keys) + "not a key line\n")
    ak = AuthorizedKeys(path)
    assert len(ak) == 4
    producer = ak.lookup(keys.producer)
    assert producer is not None
    assert producer.roles == {Role.PRODUCER}
    assert producer.fingerprint == keys.producer.get_fingerprint("sha256")
    assert ak.lookup(keys.unknown) is None


def test_unknown_role_names_the_line(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "authorized_keys"
    public = keys.producer.export_public_key().decode()
    path.write_text(f'roles="producer,superuser" {public}')
    with pytest.raises(ValueError, match=r"authorized_keys:1.*superuser"):
        AuthorizedKeys(path)


def test_principal_without_role_is_forbidden_and_says_which() -> None:
    key = asyncssh.generate_private_key("ssh-falcon512")
    fp = key.get_fingerprint("sha256")
    p = Principal("qssh", fp, "ssh-falcon512", frozenset({Role.CONSUMER}), "ops")
    assert p.submitted_by == f"ops {fp}"  # the key's principal, never the SSH username
    with pytest.raises(Forbidden, match="producer role"):
        p.require(Role.PRODUCER, "submit")
