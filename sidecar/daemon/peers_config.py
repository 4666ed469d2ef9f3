"""``[[peers]]`` and ``[relay]``: the sidecars this one relays broadcast messages to.

    [[peers]]
    name = "bob"                              # also its name in bob's authorized_keys
    address = "127.0.0.1:22223"
    host_key = "[127.0.0.1]:22223 ssh-falcon512 AAAA..."   # or known_hosts = "file"
    identity = "keys/alice_to_bob"            # our private key for bob
    # user = "alice"                          # SSH user name (default: our instance)

    [peers.qkd]                               # optional: seal the link at tier 4
    kme = "https://127.0.0.1:8443"            # our KME (we are the master SAE)
    certificate = "..."; key = "..."; ca = "..."
    sae_id = "alice"; peer_sae_id = "bob"

    [relay]
    batch = 64                  # messages per relay request (1-1000)
    reconnect_min = 0.5         # seconds; doubled per failed attempt, with jitter
    reconnect_max = 30
    backlog_warning = 10000     # warn when a peer lacks more than this many messages
    request_timeout = 30        # seconds a relay request may take before the link is cut
    max_peer_keys = 100000      # receiving side: relay dedup keys held per sending peer

Reference: docs/relay.md; parsed by ``config.py``. Paths are relative to the config file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar.dedup import DEFAULT_PEER_KEYS

if TYPE_CHECKING:
    from .config import Endpoint


@dataclass(frozen=True)
class PeerQKD:
    kme: str
    certificate: Path
    key: Path
    ca: Path
    sae_id: str
    peer_sae_id: str


@dataclass(frozen=True)
class PeerConfig:
    name: str
    address: Endpoint
    identity: Path
    host_key: str | None = None  # a known_hosts line pinning the peer's host key
    known_hosts: Path | None = None  # or a known_hosts file
    user: str | None = None
    qkd: PeerQKD | None = None


@dataclass(frozen=True)
class RelaySettings:
    batch: int = 64
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    backlog_warning: int = 10_000
    request_timeout: float = 30.0
    # receiving side: relay dedup keys held per sending peer (sidecar.dedup, docs/relay.md)
    max_peer_keys: int = DEFAULT_PEER_KEYS
