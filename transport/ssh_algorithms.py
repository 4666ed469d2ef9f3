"""Post-quantum SSH public-key algorithms, registered with asyncssh.

Importing this module registers, once, every algorithm a loaded provider serves
(``ssh-falcon512``, ``ssh-mldsa-65``, ``ssh-sphincssha2128fsimple``, ...) through
asyncssh's own hooks, so asyncssh reads and writes the keys in every OpenSSH
format and uses them as host and user keys. Wire forms follow OQS-OpenSSH and
draft-sfluhrer-ssh-mldsa::

    public key  string(name) || string(raw public key)
    signature   string(name) || string(raw signature)
    private     string(raw public key) || string(raw secret key)   (openssh-key-v1)

Names other implementations use for the same wire format (``ssh-mldsa44`` for
``ssh-mldsa-44``, see ``SignatureSpec.aliases``) are registered too, as subclasses of
the standard class; a key is the same key under either name (equal, and matched in
``authorized_keys``), and lists put the standard name first.

It also makes the server sign the key-exchange hash with slow signers (SPHINCS+,
SLH-DSA) in a worker thread: asyncssh 2.24 signs it inline on the event loop,
which would stall every other connection for the tens of milliseconds a SPHINCS+
signature takes. The C signers release the GIL, so the loop keeps running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import asyncssh.kex as _asyncssh_kex
from asyncssh.connection import SSHServerConnection
from asyncssh.kex_dh import (
    MSG_KEX_ECDH_INIT,
    MSG_KEX_ECDH_REPLY,
    _KexDHBase,
    _KexHybridECDH,
)
from asyncssh.misc import ProtocolError
from asyncssh.packet import PacketDecodeError, SSHPacket, String
from asyncssh.public_key import (
    KeyExportError,
    KeyImportError,
    SSHKey,
    register_public_key_alg,
)

from transport.crypto import HYBRID_KEX, SignatureScheme, SignatureSpec, statuses
from transport.crypto.seeded import SEED_BYTES, has_seed_form, public_from_seed, sign_with_seed
from transport.crypto.seeded_keygen import keypair_from_seed


class PQSSHKey(SSHKey):
    """An SSH key for one post-quantum signature algorithm (subclassed per algorithm)."""

    scheme: SignatureScheme
    spec: SignatureSpec

    def __init__(self, public_key: bytes, secret_key: bytes | None = None) -> None:
        super().__init__()
        self.public_key_bytes = public_key
        self.secret_key_bytes = secret_key

    def __eq__(self, other: object) -> bool:
        # the same key material of the same algorithm, under any of its SSH names
        return (
            isinstance(other, PQSSHKey)
            and other.spec is self.spec
            and self.public_key_bytes == other.public_key_bytes
            and self.secret_key_bytes == other.secret_key_bytes
        )

    def __hash__(self) -> int:
        return hash((self.spec.ssh_name, self.public_key_bytes, self.secret_key_bytes))

    @property
    def identity(self) -> tuple[str, bytes]:
        """The key under any of its names: standard algorithm name and raw public key."""
        return self.spec.ssh_name, self.public_key_bytes

    def renamed(self, ssh_name: str) -> PQSSHKey:
        """This key under another SSH name of its algorithm (e.g. an alias)."""
        key = key_class(ssh_name)(self.public_key_bytes, self.secret_key_bytes)
        if key.spec is not self.spec:
            raise ValueError(f"{ssh_name} is not a name of {self.spec.ssh_name}")
        comment = self.get_comment()
        if comment:
            key.set_comment(comment)
        return key

    @classmethod
    def generate(cls, algorithm: bytes, **kwargs: object) -> PQSSHKey:
        if kwargs:
            raise ValueError(f"{algorithm.decode()} keys take no parameters")
        public_key, secret_key = cls.scheme.generate_keypair()
        return cls(public_key, secret_key)

    @classmethod
    def from_seed(cls, seed: bytes) -> PQSSHKey:
        """The key pair this algorithm's key generation makes from ``seed``
        (see :mod:`transport.crypto.seeded_keygen`)."""
        return cls(*keypair_from_seed(cls.spec, seed))

    @property
    def seeded(self) -> bool:
        """The secret key is kept in seed form (ML-DSA made from a seed)."""
        return (
            self.secret_key_bytes is not None
            and len(self.secret_key_bytes) == SEED_BYTES
            and has_seed_form(self.spec.ssh_name)
        )

    @classmethod
    def make_private(cls, key_params: object) -> SSHKey:
        public_key, secret_key = cast(tuple[bytes, bytes], key_params)
        cls._check_public(public_key)
        if len(secret_key) == SEED_BYTES and has_seed_form(cls.spec.ssh_name):
            if public_from_seed(cls.spec.ssh_name, secret_key) != public_key:
                raise KeyImportError(
                    f"Invalid {cls.spec.ssh_name} private key: seed does not give the public key"
                )
            return cls(public_key, secret_key)
        if len(secret_key) != cls.spec.secret_key_size:
            raise KeyImportError(
                f"Invalid {cls.spec.ssh_name} private key: secret key is "
                f"{len(secret_key)} bytes, expected {cls.spec.secret_key_size}"
            )
        return cls(public_key, secret_key)

    @classmethod
    def make_public(cls, key_params: object) -> SSHKey:
        (public_key,) = cast(tuple[bytes], key_params)
        cls._check_public(public_key)
        return cls(public_key)

    @classmethod
    def _check_public(cls, public_key: bytes) -> None:
        if len(public_key) != cls.spec.public_key_size:
            raise KeyImportError(
                f"Invalid {cls.spec.ssh_name} public key: {len(public_key)} bytes, "
                f"expected {cls.spec.public_key_size}"
            )

    @classmethod
    def decode_ssh_private(cls, packet: SSHPacket) -> tuple[bytes, bytes]:
        public_key = packet.get_string()
        secret_key = packet.get_string()
        return public_key, secret_key

    @classmethod
    def decode_ssh_public(cls, packet: SSHPacket) -> tuple[bytes]:
        return (packet.get_string(),)

    def encode_ssh_private(self) -> bytes:
        if self.secret_key_bytes is None:
            raise KeyExportError("Key is not private")
        return String(self.public_key_bytes) + String(self.secret_key_bytes)

    def encode_ssh_public(self) -> bytes:
        return String(self.public_key_bytes)

    def encode_agent_cert_private(self) -> bytes:
        return self.encode_ssh_private()

    def sign_ssh(self, data: bytes, sig_algorithm: bytes) -> bytes:
        if self.secret_key_bytes is None:
            raise ValueError("Private key needed for signing")
        if self.seeded:
            return String(sign_with_seed(self.spec.ssh_name, self.secret_key_bytes, data))
        return String(self.scheme.sign(self.secret_key_bytes, data))

    def verify_ssh(self, data: bytes, sig_algorithm: bytes, packet: SSHPacket) -> bool:
        try:
            signature = packet.get_string()
            packet.check_end()
        except PacketDecodeError:
            return False
        return self.scheme.verify(self.public_key_bytes, data, signature)


def _key_class(
    scheme: SignatureScheme, ssh_name: str, base: type[PQSSHKey] = PQSSHKey
) -> type[PQSSHKey]:
    spec = scheme.spec
    algorithm = ssh_name.encode()
    attrs: dict[str, Any] = {
        "algorithm": algorithm,
        "sig_algorithms": (algorithm,),
        "all_sig_algorithms": {algorithm},
        "scheme": scheme,
        "spec": spec,
        # asyncssh signs user-auth requests in an executor when this is set.
        "use_executor": spec.slow_signer,
    }
    label = spec.name if ssh_name == spec.ssh_name else f"{spec.name} as {ssh_name}"
    name = "SSH" + "".join(ch for ch in label.title() if ch.isalnum()) + "Key"
    return cast(type[PQSSHKey], type(name, (base,), attrs))


class _OffloadedSigningHybridKex(_KexHybridECDH):
    """asyncssh's hybrid ECDH+KEM exchange, with slow host-key signing in a thread.

    Identical on the wire; only where the server computes the signature changes.
    asyncssh lets a packet handler return an awaitable, and holds further input
    until it completes.
    """

    def _process_init(  # type: ignore[override]
        self, _pkttype: int, _pktid: int, packet: SSHPacket
    ) -> Awaitable[None] | None:
        if self._conn.is_client():
            raise ProtocolError("Unexpected kex init msg")
        self._parse_client_key(packet)
        packet.check_end()
        host_key = cast(SSHServerConnection, self._conn).get_server_host_key()
        assert host_key is not None
        if not getattr(host_key, "use_executor", False):
            self._perform_reply(host_key, host_key.public_data)
            return None
        return self._perform_reply_offloaded(host_key, host_key.public_data)

    async def _perform_reply_offloaded(self, key: Any, key_data: bytes) -> None:
        shared = self._compute_server_shared()
        exchange_hash = self._compute_hash(key_data, shared)
        signature = await asyncio.get_running_loop().run_in_executor(None, key.sign, exchange_hash)
        self._send_reply(key_data, signature)
        self._conn.send_newkeys(shared, exchange_hash)

    _packet_handlers: Mapping[int, Callable[..., Any]] = {
        MSG_KEX_ECDH_INIT: _process_init,
        MSG_KEX_ECDH_REPLY: _KexDHBase._process_reply,
    }


_registered: dict[str, type[PQSSHKey]] = {}
_aliases: dict[str, type[PQSSHKey]] = {}


def _offload_kex_signing() -> None:
    handlers: dict[bytes, tuple[Any, Any, Any]] = _asyncssh_kex._kex_handlers
    for name in HYBRID_KEX:
        entry = handlers.get(name.encode())
        if entry is not None and entry[0] is _KexHybridECDH:
            handlers[name.encode()] = (_OffloadedSigningHybridKex, entry[1], entry[2])


def register() -> dict[str, type[PQSSHKey]]:
    """Register every available PQ algorithm with asyncssh (idempotent).

    Returns SSH algorithm name -> key class for what is registered.
    """
    if _registered:
        return _registered
    for status in statuses():
        if status.scheme is None:
            continue
        standard = _key_class(status.scheme, status.spec.ssh_name)
        register_public_key_alg(standard.algorithm, standard, True)
        _registered[status.spec.ssh_name] = standard
        for alias in status.spec.aliases:
            alias_class = _key_class(status.scheme, alias, standard)
            register_public_key_alg(alias_class.algorithm, alias_class, True)
            _aliases[alias] = alias_class
    _offload_kex_signing()
    return _registered


def registered_algorithms() -> list[str]:
    """Standard SSH names of the registered PQ public-key algorithms, in preference order."""
    return list(register())


def with_aliases(ssh_names: Iterable[str]) -> list[str]:
    """``ssh_names``, each followed by the other names of the same wire format."""
    register()
    result: list[str] = []
    for name in ssh_names:
        result.append(name)
        standard = _registered.get(name)
        if standard is not None:
            result.extend(a for a in standard.spec.aliases if a in _aliases)
    return result


def accepted_algorithms() -> list[str]:
    """Every SSH name we accept: each standard name, then its aliases, in preference order."""
    return with_aliases(registered_algorithms())


def canonical_name(ssh_name: str) -> str:
    """The standard name for ``ssh_name`` (itself unless it is a registered alias)."""
    register()
    alias = _aliases.get(ssh_name)
    return alias.spec.ssh_name if alias is not None else ssh_name


def key_class(ssh_name: str) -> type[PQSSHKey]:
    """The key class for a standard name or an alias."""
    found = register().get(ssh_name) or _aliases.get(ssh_name)
    if found is None:
        raise KeyImportError(f"post-quantum algorithm {ssh_name!r} is not available")
    return found


def under_every_name(keys: Iterable[SSHKey]) -> list[SSHKey]:
    """Host keys as a server presents them: each PQ key under its standard name, then
    under each alias (a client that knows only ``ssh-mldsa44`` can pick it)."""
    presented: list[SSHKey] = []
    for key in keys:
        if not isinstance(key, PQSSHKey):
            presented.append(key)
            continue
        for name in with_aliases([key.spec.ssh_name]):
            presented.append(key if name == key.get_algorithm() else key.renamed(name))
    return presented


register()
