"""Post-quantum SSH key files in OpenSSH formats.

Private keys are ``openssh-key-v1`` (optionally passphrase-protected with
bcrypt-pbkdf + aes256-ctr), public keys are one-line ``ssh-falcon512 AAAA… comment``;
``authorized_keys`` and ``known_hosts`` hold the same public lines. asyncssh does the
encoding once our algorithms are registered (:mod:`transport.ssh_algorithms`); this
module adds the file handling: modes, no silent overwrite, and errors that say
which file is wrong and how.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import logging
import os
import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncssh

from sidecar.durable_fs import fsync_dir, make_dirs
from sidecar.errors import ErrorCode, SidecarError
from transport.crypto import Family
from transport.crypto.seeded import public_from_seed
from transport.crypto.seeded_keygen import seed_size
from transport.entropy import EntropyMixer
from transport.ssh_algorithms import (
    PQSSHKey,
    accepted_algorithms,
    canonical_name,
    key_class,
    registered_algorithms,
)

log = logging.getLogger(__name__)

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
DEFAULT_ALGORITHM = "ssh-falcon512"
DEFAULT_KDF_ROUNDS = 64  # bcrypt-pbkdf rounds when a passphrase is set (bcrypt warns below 50)


class KeyFileError(SidecarError):
    """A key file is missing, malformed, of a refused algorithm, or would be overwritten."""

    code = ErrorCode.BAD_REQUEST


def canonical_algorithm(name: str) -> str:
    """``falcon512``, ``ssh-falcon512`` -> ``ssh-falcon512``; an alias (``ssh-mldsa44``)
    -> its standard name (``ssh-mldsa-44``); refuses unknown names."""
    accepted = accepted_algorithms()
    for candidate in (name, f"ssh-{name}"):
        if candidate in accepted:
            return canonical_name(candidate)
    available = registered_algorithms()
    raise KeyFileError(f"unknown key algorithm {name!r}; available: {', '.join(available)}")


_ALGORITHM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._+-]{0,63}")


def _known_key_algorithms() -> set[str]:
    known = {alg.decode() for alg in asyncssh.public_key.get_public_key_algs()}
    known |= {alg.decode() for alg in asyncssh.public_key.get_certificate_algs()}
    return known


def unsupported_algorithm(fields: Sequence[str]) -> str | None:
    """The algorithm of a well-formed key we do not support on this line
    (``ssh-dilithium3 AAAA…``: the base64 key names that same algorithm), else None."""
    known = _known_key_algorithms()
    for name, encoded in itertools.pairwise(fields):
        if name in known or not _ALGORITHM_NAME.fullmatch(name):
            continue
        try:
            blob = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(blob) >= 4:
            (length,) = struct.unpack_from(">I", blob)
            if blob[4 : 4 + length] == name.encode():
                return name
    return None


def qrng_mixed_algorithms() -> list[str]:
    """Key algorithms made from a seed, so QRNG-mixed randomness can reach the key."""
    return [a for a in registered_algorithms() if seed_size(key_class(a).spec) is not None]


def generate_key(
    algorithm: str = DEFAULT_ALGORITHM,
    comment: str | None = None,
    *,
    entropy: EntropyMixer | None = None,
) -> PQSSHKey:
    """A new key pair. With ``entropy`` holding a QRNG, the key is made from a seed mixed
    (HKDF) from OS randomness and the QRNG — every algorithm but liboqs-only SLH-DSA,
    which is generated from the provider's own randomness as without it."""
    name = canonical_algorithm(algorithm)
    cls = key_class(name)
    size = seed_size(cls.spec)
    if entropy is not None and entropy.has_qrng and size is not None:
        key = cls.from_seed(entropy.random_bytes(size, f"keygen {name}"))
    else:
        key = cls.generate(b"")
    if comment:
        key.set_comment(comment)
    return key


def public_line(key: asyncssh.SSHKey) -> str:
    """``ALG BASE64 [comment]`` as in ``.pub``, ``authorized_keys`` and ``known_hosts``."""
    return key.export_public_key("openssh").decode().strip()


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


def _write_file(path: Path, data: bytes, mode: int, *, force: bool) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``; never replace unless ``force``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # independent of the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; use --force to overwrite it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def key_pair_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    private_path = Path(path)
    return private_path, private_path.with_name(private_path.name + ".pub")


def refuse_overwrite(path: str | os.PathLike[str]) -> None:
    """Raise if ``path`` or ``path.pub`` exists (checked again, atomically, on write)."""
    for existing in key_pair_paths(path):
        if existing.exists():
            raise KeyFileError(f"{existing} already exists; use --force to overwrite it")


def write_key_pair(
    key: asyncssh.SSHKey,
    path: str | os.PathLike[str],
    *,
    passphrase: str | None = None,
    force: bool = False,
    kdf_rounds: int = DEFAULT_KDF_ROUNDS,
) -> tuple[Path, Path]:
    """Write ``path`` (private, 0600) and ``path.pub`` (public, 0644)."""
    private_path, public_path = key_pair_paths(path)
    if not force:
        refuse_overwrite(path)
    make_dirs(private_path.parent)
    private_data = key.export_private_key("openssh", passphrase or None, rounds=kdf_rounds)
    _write_file(private_path, private_data, PRIVATE_MODE, force=force)
    _write_file(public_path, (public_line(key) + "\n").encode(), PUBLIC_MODE, force=force)
    fsync_dir(private_path.parent)
    return private_path, public_path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise KeyFileError(f"{what} {path} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise KeyFileError(f"{what} {path} is a directory, not a key file") from None


def _require_pq(key: asyncssh.SSHKey, path: Path, what: str) -> PQSSHKey:
    if not isinstance(key, PQSSHKey):
        raise KeyFileError(
            f"{what} {path} is a {key.get_algorithm()} key; only post-quantum keys "
            f"are accepted ({', '.join(registered_algorithms())})"
        )
    return key


def check_key_pair(key: PQSSHKey) -> bool:
    """True if the secret key belongs to the public key stored with it."""
    secret = key.secret_key_bytes
    if secret is None:
        return False
    if key.seeded:
        return public_from_seed(key.spec.ssh_name, secret) == key.public_key_bytes
    if key.spec.family in (Family.SPHINCS, Family.SLH_DSA):
        # SPHINCS+/SLH-DSA secret keys end with the public key (PK.seed || PK.root).
        return secret[-len(key.public_key_bytes) :] == key.public_key_bytes
    probe = b"qssh-sidecar key pair check"
    signature = key.scheme.sign(secret, probe)
    return key.scheme.verify(key.public_key_bytes, probe, signature)


def read_private_key(
    path: str | os.PathLike[str], passphrase: str | None = None, *, require_pq: bool = True
) -> asyncssh.SSHKey:
    path = Path(path)
    data = _read(path, "private key")
    try:
        key = asyncssh.import_private_key(data, passphrase or None)
    except asyncssh.KeyEncryptionError as exc:
        if "passphrase" in str(exc).lower():
            raise KeyFileError(f"private key {path}: wrong passphrase") from None
        raise KeyFileError(f"private key {path}: cannot decrypt ({exc})") from None
    except asyncssh.KeyImportError as exc:
        message = str(exc)
        if "Passphrase must be specified" in message:
            raise KeyFileError(
                f"private key {path} is encrypted: give its passphrase (-N / passphrase=)"
            ) from None
        raise KeyFileError(f"private key {path} is malformed: {message}") from None
    key.set_filename(str(path))
    if not require_pq:
        return key
    pq_key = _require_pq(key, path, "private key")
    if not check_key_pair(pq_key):
        raise KeyFileError(f"private key {path}: secret key does not match its public key")
    return pq_key


def read_public_key(path: str | os.PathLike[str], *, require_pq: bool = True) -> asyncssh.SSHKey:
    path = Path(path)
    data = _read(path, "public key")
    try:
        key = asyncssh.import_public_key(data)
    except asyncssh.KeyImportError as exc:
        raise KeyFileError(f"public key {path} is malformed: {exc}") from None
    return _require_pq(key, path, "public key") if require_pq else key


def _check_key_fields(path: Path, what: str, number: int, fields: list[str]) -> None:
    """Raise a KeyFileError naming the line if ``ALG BASE64`` is not a usable key."""
    if len(fields) < 2:
        raise KeyFileError(f"{what} {path} line {number}: expected 'ALGORITHM BASE64-KEY'")
    try:
        asyncssh.import_public_key(f"{fields[0]} {fields[1]}")
    except asyncssh.KeyImportError as exc:
        raise KeyFileError(f"{what} {path} line {number}: {exc}") from None


def _key_lines(text: str) -> list[tuple[int, str]]:
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


class PostQuantumAuthorizedKeys(asyncssh.SSHAuthorizedKeys):
    """``authorized_keys`` that only ever matches post-quantum user keys.

    asyncssh's server does not restrict user-key algorithms by ``signature_algs``,
    so the restriction lives here, where keys are matched.
    """

    def validate(
        self,
        key: asyncssh.SSHKey,
        client_host: str,
        client_addr: str,
        cert_principals: Sequence[str] | None = None,
        ca: bool = False,
    ) -> Mapping[str, object] | None:
        if not isinstance(key, PQSSHKey):
            return None
        return super().validate(key, client_host, client_addr, cert_principals, ca)

    def validate_x509(self, cert: Any, client_host: str, client_addr: str) -> tuple[None, None]:
        return None, None


def parse_authorized_keys(
    text: str, source: str = "<authorized_keys>", *, require_pq: bool = True
) -> PostQuantumAuthorizedKeys:
    """Parse ``authorized_keys`` text; any bad line is an error, never silently skipped.

    A well-formed key of an algorithm we do not support (``ssh-dilithium3`` from an
    older OQS-OpenSSH) is skipped with a warning naming the algorithm: the line is
    valid, another implementation may well read it."""
    what = "authorized_keys"
    path = Path(source)
    known = _known_key_algorithms()
    pq = set(accepted_algorithms())
    lines = _key_lines(text)
    if not lines:
        raise KeyFileError(f"{what} {path} has no keys")
    kept: list[str] = []
    for number, line in lines:
        fields = line.split()
        # Options (which may hold quoted spaces) come before the algorithm name.
        start = next((i for i, field in enumerate(fields) if field in known), None)
        if start is None:
            unsupported = unsupported_algorithm(fields)
            if unsupported is None:
                raise KeyFileError(f"{what} {path} line {number}: no known key algorithm")
            log.warning(
                "%s %s line %d: skipped, key algorithm %s is not supported here (supported: %s)",
                what,
                path,
                number,
                unsupported,
                ", ".join(accepted_algorithms()),
            )
            continue
        kept.append(line)
        _check_key_fields(path, what, number, fields[start:])
        if require_pq and fields[start] not in pq:
            raise KeyFileError(
                f"{what} {path} line {number}: {fields[start]} is not a post-quantum key "
                f"algorithm; generate one with `qssh-sidecar keygen`"
            )
        try:
            asyncssh.import_authorized_keys(line)
        except ValueError as exc:
            raise KeyFileError(f"{what} {path} line {number}: {exc}") from None
    try:
        return PostQuantumAuthorizedKeys("\n".join(kept) + "\n" if kept else None)
    except ValueError as exc:
        raise KeyFileError(f"{what} {path} is malformed: {exc}") from None


def read_authorized_keys(
    path: str | os.PathLike[str], *, require_pq: bool = True
) -> PostQuantumAuthorizedKeys:
    path = Path(path)
    text = _read(path, "authorized_keys file").decode("utf-8", errors="replace")
    return parse_authorized_keys(text, str(path), require_pq=require_pq)


def read_known_hosts(path: str | os.PathLike[str]) -> asyncssh.SSHKnownHosts:
    """Parse a ``known_hosts`` file; any bad line is an error, never silently skipped."""
    path = Path(path)
    what = "known_hosts file"
    text = _read(path, what).decode("utf-8", errors="replace")
    for number, line in _key_lines(text):
        fields = line.split()
        if fields[0].startswith("@"):  # @cert-authority / @revoked marker
            fields = fields[1:]
        _check_key_fields(path, what, number, fields[1:])
    try:
        return asyncssh.import_known_hosts(text)
    except ValueError as exc:
        raise KeyFileError(f"{what} {path} is malformed: {exc}") from None


def known_hosts_line(host: str, port: int, key: asyncssh.SSHKey) -> str:
    """A ``known_hosts`` line pinning ``key`` for ``host:port`` (OpenSSH syntax)."""
    pattern = host if port == 22 else f"[{host}]:{port}"
    return f"{pattern} {public_line(key)}"
