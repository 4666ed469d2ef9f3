"""Names other implementations use for our wire formats, and algorithms we do not have.

OQS-OpenSSH (OQS-v9), DigiCert NanoSSH and draft-rpe-ssh-mldsa call ML-DSA
``ssh-mldsa44`` / ``ssh-mldsa65`` / ``ssh-mldsa87``; draft-sfluhrer-ssh-mldsa (our
standard name) says ``ssh-mldsa-44`` ... Both encode a public key as
string(name) || string(FIPS 204 public key) and a signature as
string(name) || string(pure ML-DSA signature, empty context): only the name differs.
"""

from __future__ import annotations

import base64
import logging
import struct
from pathlib import Path

import asyncssh
import pytest
from asyncssh.packet import SSHPacket, String

from tests.transport.sshutil import client_options, pq_server
from transport.auth import AuthorizedKeys
from transport.host_pinning import HostKeyPinning, StrictHostKeyChecking
from transport.keys import (
    KeyFileError,
    canonical_algorithm,
    generate_key,
    known_hosts_line,
    public_line,
    read_authorized_keys,
    read_private_key,
    read_public_key,
    write_key_pair,
)
from transport.ssh_algorithms import (
    PQSSHKey,
    accepted_algorithms,
    canonical_name,
    key_class,
    under_every_name,
)
from transport.ssh_options import HIGH_ASSURANCE_HOST_KEYS, ssh_options_for_tier

ML_DSA = {
    "ssh-mldsa-44": "ssh-mldsa44",
    "ssh-mldsa-65": "ssh-mldsa65",
    "ssh-mldsa-87": "ssh-mldsa87",
}
DATA = b"exchange hash"


def _string(blob: bytes, at: int = 0) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", blob, at)
    return blob[at + 4 : at + 4 + length], at + 4 + length


def _dilithium3_line(comment: str = "old-oqs") -> str:
    # A Dilithium round-3 key (OQS-OpenSSH OQS-v8): 1952-byte public key like ML-DSA-65,
    # but a different algorithm (different signatures), so never an alias.
    blob = String(b"ssh-dilithium3") + String(bytes(range(256)) * 7 + bytes(160))
    return f"ssh-dilithium3 {base64.b64encode(blob).decode()} {comment}"


@pytest.mark.parametrize(("standard", "alias"), list(ML_DSA.items()))
def test_alias_is_the_same_wire_format_under_another_name(standard: str, alias: str) -> None:
    key = generate_key(standard)
    renamed = key.renamed(alias)
    assert renamed.get_algorithm() == alias
    assert canonical_name(alias) == standard
    # public key blob: string(name) || string(raw key); only the name differs
    for k, name in ((key, standard), (renamed, alias)):
        got_name, end = _string(k.public_data)
        raw, end = _string(k.public_data, end)
        assert (got_name, raw, end) == (name.encode(), key.public_key_bytes, len(k.public_data))
    # signature blob: string(name) || string(raw signature); each verifies the other's
    signature = renamed.sign(DATA, alias.encode())
    got_name, end = _string(signature)
    raw_signature, end = _string(signature, end)
    assert (got_name, end) == (alias.encode(), len(signature))
    assert len(raw_signature) == key.spec.signature_size
    assert key.scheme.verify(key.public_key_bytes, DATA, raw_signature)
    standard_signature = key.sign(DATA, standard.encode())
    packet = SSHPacket(standard_signature)
    assert packet.get_string() == standard.encode()
    assert renamed.verify_ssh(DATA, alias.encode(), packet)
    # the same key under either name
    assert renamed == key
    assert renamed.identity == key.identity
    assert isinstance(renamed, type(key))


def test_an_oqs_openssh_public_key_line_reads_and_names_the_standard_algorithm(
    tmp_path: Path,
) -> None:
    key = generate_key("ssh-mldsa-65")
    blob = String(b"ssh-mldsa65") + String(key.public_key_bytes)
    path = tmp_path / "id_mldsa65.pub"
    path.write_text(f"ssh-mldsa65 {base64.b64encode(blob).decode()} user@oqs\n")
    imported = read_public_key(path)
    assert isinstance(imported, PQSSHKey)
    assert imported.get_algorithm() == "ssh-mldsa65"
    assert imported == key.convert_to_public()
    assert imported.identity == key.identity
    assert imported.spec.ssh_name == "ssh-mldsa-65"


def test_an_alias_named_private_key_file_round_trips_and_signs(tmp_path: Path) -> None:
    key = generate_key("ssh-mldsa-44").renamed("ssh-mldsa44")
    private, public = write_key_pair(key, tmp_path / "id_mldsa44")
    assert public.read_text().startswith("ssh-mldsa44 ")
    loaded = read_private_key(private)
    assert loaded.get_algorithm() == "ssh-mldsa44"
    assert loaded == key


def test_keygen_names_accept_aliases_and_write_the_standard_name() -> None:
    assert canonical_algorithm("mldsa44") == "ssh-mldsa-44"
    assert canonical_algorithm("ssh-mldsa87") == "ssh-mldsa-87"
    assert canonical_algorithm("mldsa-65") == "ssh-mldsa-65"
    with pytest.raises(KeyFileError, match="unknown key algorithm 'dilithium3'"):
        canonical_algorithm("dilithium3")


def test_lists_put_the_standard_name_first() -> None:
    accepted = accepted_algorithms()
    for standard, alias in ML_DSA.items():
        assert accepted.index(alias) == accepted.index(standard) + 1
    options = ssh_options_for_tier(2, "client")
    for key in ("server_host_key_algs", "signature_algs"):
        names = options[key]
        assert isinstance(names, list)
        assert names.index("ssh-mldsa44") == names.index("ssh-mldsa-44") + 1
    strict = ssh_options_for_tier(2, "client", allowed_host_key_algs=HIGH_ASSURANCE_HOST_KEYS)
    assert "ssh-mldsa87" in strict["server_host_key_algs"]  # type: ignore[operator]
    assert "ssh-mldsa44" not in strict["server_host_key_algs"]  # type: ignore[operator]
    # an alias in an operator's allowed list means its algorithm
    by_alias = ssh_options_for_tier(2, "client", allowed_host_key_algs=["ssh-mldsa65"])
    assert by_alias["server_host_key_algs"] == ["ssh-mldsa-65", "ssh-mldsa65"]
    host = generate_key("ssh-mldsa-65")
    falcon = generate_key("ssh-falcon512")
    presented = under_every_name([host, falcon])
    assert [k.get_algorithm() for k in presented] == [
        "ssh-mldsa-65",
        "ssh-mldsa65",
        "ssh-falcon512",
    ]


@pytest.mark.parametrize(
    ("user_name", "listed_name", "host_key_algs"),
    [
        ("ssh-mldsa44", "ssh-mldsa-44", ["ssh-mldsa44"]),  # an OQS-v9 client, our listing
        ("ssh-mldsa-44", "ssh-mldsa44", ["ssh-mldsa-44"]),  # our client, an OQS listing
    ],
)
async def test_a_client_using_either_name_logs_in_with_the_same_key(
    user_name: str, listed_name: str, host_key_algs: list[str]
) -> None:
    host = generate_key("ssh-mldsa-44")
    user = generate_key("ssh-mldsa-44")
    listed = user.renamed(listed_name)
    async with pq_server(host, [listed]) as server:
        options = client_options(server, user.renamed(user_name))
        options["server_host_key_algs"] = host_key_algs
        options["signature_algs"] = [user_name]
        async with asyncssh.connect(**options) as conn:
            assert (await conn.run("ping", check=True)).stdout == "ran ping\n"
            server_key = conn.get_server_host_key()
            assert server_key is not None
            assert server_key.get_algorithm() == host_key_algs[0]
            assert isinstance(server_key, PQSSHKey)
            assert server_key.identity == host.identity


def test_an_unsupported_algorithm_line_is_skipped_with_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = generate_key("ssh-falcon512")
    path = tmp_path / "authorized_keys"
    path.write_text(
        f'roles="producer" {_dilithium3_line()}\n{public_line(good)}\n{_dilithium3_line("b")}\n'
    )
    with caplog.at_level(logging.WARNING):
        authorized = read_authorized_keys(path)
    assert authorized.validate(good.convert_to_public(), "127.0.0.1", "127.0.0.1") is not None
    warnings = [r.getMessage() for r in caplog.records if "ssh-dilithium3" in r.getMessage()]
    assert len(warnings) == 2
    assert "line 1: skipped, key algorithm ssh-dilithium3 is not supported here" in warnings[0]
    assert "line 3:" in warnings[1]
    # a file of nothing but such lines reads as no usable keys, without raising
    path.write_text(_dilithium3_line() + "\n")
    assert read_authorized_keys(path).validate(good, "127.0.0.1", "127.0.0.1") is None


def test_the_server_skips_an_unsupported_algorithm_line_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = generate_key("ssh-mldsa-65")
    path = tmp_path / "authorized_keys"
    path.write_text(f'{_dilithium3_line()}\nroles="consumer" {public_line(good)}\n')
    with caplog.at_level(logging.WARNING):
        keys = AuthorizedKeys(path)
    assert len(keys) == 1
    entry = keys.lookup(good.renamed("ssh-mldsa65"))  # the same key under its alias
    assert entry is not None
    assert {r.value for r in entry.roles} == {"consumer"}
    assert any(
        "skipped, key algorithm ssh-dilithium3 is not supported here" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(
    "bad_line",
    [
        "bogus",
        # names an algorithm the key inside does not carry: malformed, not unsupported
        "ssh-dilithium3 AAAAC3NzaC1lZDI1NTE5AAAAIE",
        "ssh-dilithium3 not-base64!!",
    ],
)
def test_a_malformed_line_is_still_an_error(tmp_path: Path, bad_line: str) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(f"{public_line(generate_key())}\n{bad_line}\n")
    with pytest.raises(KeyFileError, match="line 2: no known key algorithm"):
        read_authorized_keys(path)


def test_alias_classes_are_registered_with_asyncssh() -> None:
    for standard, alias in ML_DSA.items():
        assert key_class(alias).spec is key_class(standard).spec
        assert alias.encode() in asyncssh.public_key.get_public_key_algs()


def test_a_host_key_pinned_under_the_alias_is_the_same_host_key(tmp_path: Path) -> None:
    host = generate_key("ssh-mldsa-87")
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", 2222, host.renamed("ssh-mldsa87")) + "\n")
    pinning = HostKeyPinning(known, StrictHostKeyChecking.YES)
    assert pinning.check("127.0.0.1", "127.0.0.1", 2222, host.convert_to_public())
    other = generate_key("ssh-mldsa-87")
    assert not pinning.check("127.0.0.1", "127.0.0.1", 2222, other.convert_to_public())
    assert pinning.refusal is not None
    assert "HAS CHANGED" in str(pinning.refusal)
