"""Key files in OpenSSH formats: round trips, passphrases, modes, and clear errors."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import asyncssh
import pytest
from asyncssh.packet import String

from transport.crypto import available_schemes
from transport.keys import (
    KeyFileError,
    canonical_algorithm,
    generate_key,
    known_hosts_line,
    public_line,
    read_authorized_keys,
    read_known_hosts,
    read_private_key,
    read_public_key,
    write_key_pair,
)

VECTORS = Path(__file__).parent / "vectors"
ALGS = [s.spec.ssh_name for s in available_schemes()]


@pytest.mark.parametrize("alg", ALGS)
def test_private_key_file_round_trips(tmp_path: Path, alg: str) -> None:
    key = generate_key(alg, "alice@validator")
    private_path, public_path = write_key_pair(key, tmp_path / "id")
    loaded = read_private_key(private_path)
    assert loaded == key
    assert loaded.get_comment() == "alice@validator"
    assert private_path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    public = read_public_key(public_path)
    assert public.public_data == key.public_data
    assert public_path.read_text() == f"{alg} {public_line(key).split()[1]} alice@validator\n"


@pytest.mark.parametrize("alg", ["ssh-falcon512", "ssh-sphincssha2128fsimple"])
def test_passphrase_protected_key_round_trips(tmp_path: Path, alg: str) -> None:
    key = generate_key(alg)
    private_path, _ = write_key_pair(key, tmp_path / "id", passphrase="s3cret")
    assert b"bcrypt" in base64.b64decode("".join(private_path.read_text().splitlines()[1:-1]))
    assert read_private_key(private_path, "s3cret") == key


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    private_path, _ = write_key_pair(generate_key(), tmp_path / "id", passphrase="right")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        read_private_key(private_path, "wrong")


def test_missing_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    private_path, _ = write_key_pair(generate_key(), tmp_path / "id", passphrase="right")
    with pytest.raises(KeyFileError, match="is encrypted: give its passphrase"):
        read_private_key(private_path)


def test_stored_encrypted_key_file_still_reads() -> None:
    """A file written by an earlier build: the on-disk format must not drift."""
    key = read_private_key(VECTORS / "id_falcon512_passphrase", "correct horse")
    public = read_public_key(VECTORS / "id_falcon512_passphrase.pub")
    assert key.public_data == public.public_data
    assert key.get_comment() == "vector@qssh"


def test_private_key_is_0600_and_public_key_0644(tmp_path: Path) -> None:
    private_path, public_path = write_key_pair(generate_key(), tmp_path / "keys" / "id")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644


def test_existing_key_files_are_not_overwritten_without_force(tmp_path: Path) -> None:
    first = generate_key()
    private_path, public_path = write_key_pair(first, tmp_path / "id")
    before = private_path.read_bytes(), public_path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists; use --force"):
        write_key_pair(generate_key(), tmp_path / "id")
    assert (private_path.read_bytes(), public_path.read_bytes()) == before
    second = generate_key()
    write_key_pair(second, tmp_path / "id", force=True)
    assert read_private_key(private_path) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id", "id.pub"]  # no temp files left


def test_existing_public_file_alone_blocks_overwrite(tmp_path: Path) -> None:
    (tmp_path / "id.pub").write_text("keep me\n")
    with pytest.raises(KeyFileError, match=r"id\.pub already exists"):
        write_key_pair(generate_key(), tmp_path / "id")
    assert not (tmp_path / "id").exists()


def test_authorized_keys_line_is_read_by_asyncssh(tmp_path: Path) -> None:
    key = generate_key("ssh-mldsa-44", "bob")
    path = tmp_path / "authorized_keys"
    path.write_text(f'# comment line\nrestrict,command="stats" {public_line(key)}\n')
    authorized = read_authorized_keys(path)
    matched = authorized.validate(key.convert_to_public(), "127.0.0.1", "127.0.0.1")
    assert matched is not None
    assert matched.get("command") == "stats"
    other = generate_key("ssh-mldsa-44")
    assert authorized.validate(other.convert_to_public(), "127.0.0.1", "127.0.0.1") is None


def test_known_hosts_line_is_read_by_asyncssh(tmp_path: Path) -> None:
    key = generate_key("ssh-falcon1024")
    path = tmp_path / "known_hosts"
    path.write_text(known_hosts_line("127.0.0.1", 2222, key) + "\n")
    assert path.read_text().startswith("[127.0.0.1]:2222 ssh-falcon1024 AAAA")
    host_keys, *_ = read_known_hosts(path).match("127.0.0.1", "127.0.0.1", 2222)
    assert {k.public_data for k in host_keys} == {key.public_data}


def test_algorithm_names_accept_the_short_form() -> None:
    assert canonical_algorithm("falcon512") == "ssh-falcon512"
    assert canonical_algorithm("ssh-mldsa-87") == "ssh-mldsa-87"
    with pytest.raises(KeyFileError, match="unknown key algorithm 'ed25519'"):
        canonical_algorithm("ed25519")


# --- malformed files: every one a KeyFileError that names the file and the fault ------


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def test_missing_private_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"private key .*nope does not exist"):
        read_private_key(tmp_path / "nope")


def test_directory_instead_of_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="is a directory"):
        read_private_key(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key at all\n",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n!!!!\n-----END OPENSSH PRIVATE KEY-----\n",
        b"\x00\xff" * 40,
    ],
    ids=["empty", "text", "bad-base64", "binary"],
)
def test_garbage_private_key_file(tmp_path: Path, content: bytes) -> None:
    path = _write(tmp_path, "id", content)
    with pytest.raises(KeyFileError, match=r"private key .*id is malformed"):
        read_private_key(path)


def test_truncated_private_key_file(tmp_path: Path) -> None:
    private_path, _ = write_key_pair(generate_key(), tmp_path / "id")
    lines = private_path.read_text().splitlines()
    private_path.write_text("\n".join([*lines[: len(lines) // 2], lines[-1]]) + "\n")
    with pytest.raises(KeyFileError, match="is malformed"):
        read_private_key(private_path)


def test_private_key_with_mismatched_public_half_is_refused(tmp_path: Path) -> None:
    one, two = generate_key(), generate_key()
    spliced = type(one)(two.public_key_bytes, one.secret_key_bytes)
    private_path, _ = write_key_pair(spliced, tmp_path / "id")
    with pytest.raises(KeyFileError, match="does not match its public key"):
        read_private_key(private_path)


def test_classical_private_key_is_refused(tmp_path: Path) -> None:
    ed = asyncssh.generate_private_key("ssh-ed25519")
    path = _write(tmp_path, "id_ed25519", ed.export_private_key())
    with pytest.raises(KeyFileError, match="is a ssh-ed25519 key; only post-quantum keys"):
        read_private_key(path)
    assert read_private_key(path, require_pq=False).get_algorithm() == "ssh-ed25519"


def test_public_key_line_with_wrong_key_length(tmp_path: Path) -> None:
    key = generate_key()
    blob = String(b"ssh-falcon512") + String(key.public_key_bytes + b"\x00")
    path = _write(tmp_path, "id.pub", f"ssh-falcon512 {base64.b64encode(blob).decode()} x\n")
    with pytest.raises(KeyFileError, match="malformed: Invalid ssh-falcon512 public key: 898"):
        read_public_key(path)


def test_public_key_line_with_unknown_algorithm(tmp_path: Path) -> None:
    path = _write(tmp_path, "id.pub", "ssh-unknown AAAAC3NzaC11bmtub3du x\n")
    with pytest.raises(KeyFileError, match=r"public key .*id\.pub is malformed"):
        read_public_key(path)


@pytest.mark.parametrize(
    ("bad_line", "fault"),
    [
        ("ssh-falcon512 not-base64!!", "line 2: Invalid"),
        ("bogus", "line 2: no known key algorithm"),
        ('command="x" ssh-falcon512', "line 2: expected 'ALGORITHM BASE64-KEY'"),
        ("ssh-falcon512 AAAAC3NzaC1lZDI1NTE5AAAAIE x", "line 2: Invalid"),
    ],
)
def test_a_bad_authorized_keys_line_is_an_error_not_skipped(
    tmp_path: Path, bad_line: str, fault: str
) -> None:
    good = public_line(generate_key())
    path = _write(tmp_path, "authorized_keys", f"{good}\n{bad_line}\n")
    with pytest.raises(KeyFileError, match=f"authorized_keys .*{fault}"):
        read_authorized_keys(path)


@pytest.mark.parametrize(
    ("bad_line", "fault"),
    [
        ("[127.0.0.1]:22 ssh-falcon512", "line 2: expected 'ALGORITHM BASE64-KEY'"),
        ("[127.0.0.1]:22 ssh-falcon512 AAAA!!", "line 2: Invalid"),
        ("[127.0.0.1]:22 ssh-nope AAAAC3NzaC1lZDI1NTE5AAAAIE", "line 2: "),
    ],
)
def test_a_bad_known_hosts_line_is_an_error_not_skipped(
    tmp_path: Path, bad_line: str, fault: str
) -> None:
    good = known_hosts_line("127.0.0.1", 22, generate_key())
    path = _write(tmp_path, "known_hosts", f"# pinned\n{bad_line}\n{good}\n")
    with pytest.raises(KeyFileError, match=f"known_hosts file .*{fault}"):
        read_known_hosts(path)


def test_classical_authorized_key_line_is_refused(tmp_path: Path) -> None:
    ed = asyncssh.generate_private_key("ssh-ed25519")
    path = _write(tmp_path, "authorized_keys", ed.export_public_key())
    with pytest.raises(KeyFileError, match="line 1: ssh-ed25519 is not a post-quantum key"):
        read_authorized_keys(path)


def test_classical_key_never_matches_even_when_listed(tmp_path: Path) -> None:
    ed = asyncssh.generate_private_key("ssh-ed25519")
    path = _write(tmp_path, "authorized_keys", ed.export_public_key())
    authorized = read_authorized_keys(path, require_pq=False)
    assert authorized.validate(ed.convert_to_public(), "127.0.0.1", "127.0.0.1") is None
    assert (
        asyncssh.import_authorized_keys(ed.export_public_key().decode()).validate(
            ed.convert_to_public(), "127.0.0.1", "127.0.0.1"
        )
        is not None
    )  # the control: stock asyncssh would have matched it


def test_empty_authorized_keys_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "authorized_keys", "# nobody yet\n")
    with pytest.raises(KeyFileError, match="has no keys"):
        read_authorized_keys(path)
