"""known_hosts ``@revoked`` lines: a revoked host key is refused under every
StrictHostKeyChecking mode, as OpenSSH refuses it, and is never pinned."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from tests.service.conftest import Keys, Service
from transport.host_pinning import HostKeyError, HostKeyPinning, StrictHostKeyChecking
from transport.keys import public_line

PORT = 2222
HOST = f"[127.0.0.1]:{PORT}"


def revoked_refused(pin: HostKeyPinning, key: asyncssh.SSHKey) -> bool:
    if pin.check("127.0.0.1", "127.0.0.1", PORT, key.convert_to_public()):
        return False
    assert pin.refusal is not None
    assert "REVOKED HOST KEY" in str(pin.refusal)
    assert key.get_fingerprint("sha256") in str(pin.refusal)
    return True


@pytest.mark.parametrize("policy", list(StrictHostKeyChecking))
@pytest.mark.parametrize(
    "layout",
    [
        "revoked and pinned",  # also listed as trusted
        "revoked only",  # unknown otherwise: accept-new / no must not pin it
        "revoked for every host",  # @revoked * ...
    ],
)
def test_a_revoked_host_key_is_refused_under_every_mode(
    tmp_path: Path, keys: Keys, policy: StrictHostKeyChecking, layout: str
) -> None:
    known = tmp_path / "known_hosts"
    key = public_line(keys.host)
    text = {
        "revoked and pinned": f"@revoked {HOST} {key}\n{HOST} {key}\n",
        "revoked only": f"@revoked {HOST} {key}\n",
        "revoked for every host": f"{HOST} {key}\n@revoked * {key}\n",
    }[layout]
    known.write_text(text)
    assert revoked_refused(HostKeyPinning(known, policy), keys.host)
    assert known.read_text() == text  # nothing pinned


def test_another_key_of_the_host_is_still_checked_as_before(tmp_path: Path, keys: Keys) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(
        f"@revoked {HOST} {public_line(keys.unknown)}\n{HOST} {public_line(keys.host)}\n"
    )
    pin = HostKeyPinning(known, StrictHostKeyChecking.YES)
    assert pin.check("127.0.0.1", "127.0.0.1", PORT, keys.host.convert_to_public())
    assert not pin.check("127.0.0.1", "127.0.0.1", PORT, keys.admin.convert_to_public())
    assert "HAS CHANGED" in str(pin.refusal)


async def test_the_client_refuses_a_revoked_host_key(service: Service, tmp_path: Path) -> None:
    known = tmp_path / "revoked_known_hosts"
    known.write_text(
        f"[127.0.0.1]:{service.port} {public_line(service.keys.host)}\n"
        f"@revoked * {public_line(service.keys.host)}\n"
    )
    with pytest.raises(HostKeyError, match="REVOKED HOST KEY"):
        await service.connect(known_hosts=known, strict_host_key_checking="accept-new")
