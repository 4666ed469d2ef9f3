"""The daemon's configuration: embedded defaults, a TOML file, command-line overrides.

Validation is strict and happens before anything listens: an unknown key, a bad
port, a non-loopback metrics or node address, an unreadable key file or a data dir
the daemon cannot write each raise :class:`ConfigError` with one line that names the
setting and says what to do. The reference of every key is ``docs/operations.md``.
"""

from __future__ import annotations

import errno
import grp
import ipaddress
import os
import re
import ssl
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hardware.config import HardwareConfig, HardwareConfigError
from sidecar.dedup import DEFAULT_DEDUP_ENTRIES, DEFAULT_DEDUP_WINDOW
from sidecar.durable_fs import make_dirs
from transport import event_loop
from transport.admission import (
    AdmissionLimits,
    Penalties,
    parse_networks,
    parse_penalties,
    parse_startups,
)
from transport.limits import ServiceLimits
from transport.protocol import DEFAULT_PORT
from transport.protocol.sealing import Aead
from transport.tiers import DEFAULT_POLICY, TierPolicy

from .peers_config import PeerConfig, PeerQKD, RelaySettings

DEFAULT_INSTANCE = "alice"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_METRICS_PORT = 9615  # Prometheus, on by default (as Substrate's own exporter)
_INSTANCE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ConfigError(Exception):
    """A configuration problem, reported as one line before the daemon listens."""


class DiskFull(Exception):
    """The data dir's filesystem has no space left: not a configuration problem."""


def _full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_SERVICE = ServiceLimits()


@dataclass(frozen=True)
class Limits:
    max_connections: int = _SERVICE.max_connections  # authenticated SSH connections
    max_in_flight: int = _SERVICE.max_in_flight_per_channel
    max_frame_bytes: int = _SERVICE.max_frame_bytes
    max_message_bytes: int = 1024 * 1024
    max_queue_messages: int = 1_000_000
    max_queue_bytes: int = 1024 * 1024 * 1024
    # submits per second per authenticated SSH connection (a token bucket of
    # submit_burst tokens); 0: no rate limit
    submits_per_second: float = _SERVICE.submits_per_second
    submit_burst: int = _SERVICE.submit_burst


@dataclass(frozen=True)
class Durability:
    # "default": each kind's default mode, callers may ask for async;
    # "sync": every submit is made sync (async requests are upgraded).
    policy: str = "default"
    compact_bytes: int = 10 * 1024 * 1024
    shutdown_timeout: float = 10.0
    # submits with a dedup_id: how long a key is remembered, and how many keys at most
    dedup_window: float = DEFAULT_DEDUP_WINDOW
    dedup_max_entries: int = DEFAULT_DEDUP_ENTRIES


@dataclass(frozen=True)
class EntropyPublishing:
    """``entropy_share`` messages from the QRNG while the tier is >= 3."""

    interval: float = 10.0  # seconds between messages; 0 = never publish
    bytes: int = 64


@dataclass(frozen=True)
class Sealing:
    """Tier-4 frame sealing with QKD keys from ``[hardware.kme]`` (this node = slave SAE)."""

    enabled: bool = True
    aead: Aead = Aead.AES_256_GCM
    rekey_frames: int = 100_000
    rekey_seconds: float = 600.0


@dataclass(frozen=True)
class Tiers:
    policy: TierPolicy = DEFAULT_POLICY
    entropy: EntropyPublishing = EntropyPublishing()
    sealing: Sealing = Sealing()


DEFAULT_NODE_HTTP = "127.0.0.1:9955"  # beside the node's 9944/9933, clear of metrics' 9615


@dataclass(frozen=True)
class NodeEndpoint:
    """``[node]``: the node's JSON-RPC endpoint and its bounds (docs/operations.md)."""

    socket: Path | None
    socket_group: str | None = None
    http: Endpoint | None = None
    max_connections: int = 64
    max_body_bytes: int = 4 * 1024 * 1024
    max_ws_message_bytes: int = 4 * 1024 * 1024
    max_batch: int = 256
    max_in_flight: int = 16  # requests answered at once on one connection
    max_subscriptions: int = 16  # per connection
    max_unacked: int = 1024  # the most a subscription may ask for
    ws_send_buffer_bytes: int = 64 * 1024
    # seconds from connecting to a first complete request (and from a later request's
    # first byte to its end); a connection that misses it is closed
    first_request_timeout: float = 10.0


_NODE_LIMITS = (
    "max_connections",
    "max_body_bytes",
    "max_ws_message_bytes",
    "max_batch",
    "max_in_flight",
    "max_subscriptions",
    "max_unacked",
    "ws_send_buffer_bytes",
)


@dataclass(frozen=True)
class DaemonConfig:
    instance: str = DEFAULT_INSTANCE
    data_dir: Path = Path("data") / DEFAULT_INSTANCE
    listen: Endpoint = Endpoint(DEFAULT_HOST, DEFAULT_PORT)
    host_key: Path | None = None  # default: <data_dir>/host_key, generated on first start
    authorized_keys: Path | None = None  # default: <data_dir>/authorized_keys
    limits: Limits = Limits()
    durability: Durability = Durability()
    # [hardware] as hardware.HardwareConfig reads it: sources, KME, tier floor/ceiling.
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    metrics: Endpoint | None = Endpoint(DEFAULT_HOST, DEFAULT_METRICS_PORT)  # None: off
    node: NodeEndpoint = NodeEndpoint(socket=None)
    tiers: Tiers = Tiers()
    peers: tuple[PeerConfig, ...] = ()
    relay: RelaySettings = field(default_factory=RelaySettings)
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    event_loop: str = event_loop.DEFAULT  # "uvloop" or "asyncio" (transport.event_loop)
    # True when nothing was configured: the daemon sets up a local operator key.
    embedded_defaults: bool = True

    @property
    def host_key_path(self) -> Path:
        return self.host_key or self.data_dir / "host_key"

    @property
    def authorized_keys_path(self) -> Path:
        return self.authorized_keys or self.data_dir / "authorized_keys"

    @property
    def node_socket_path(self) -> Path:
        return self.node.socket or self.data_dir / "node.sock"

    @property
    def submit_policy(self) -> TierPolicy:
        """What ``transport.tiers.admit`` applies to every submit, SSH or node: the
        ``[tiers]`` rules, ``durability.policy`` and ``limits.max_message_bytes``."""
        return replace(
            self.tiers.policy,
            always_sync=self.durability.policy == "sync",
            max_message_bytes=self.limits.max_message_bytes,
        )


# ---- parsing ---------------------------------------------------------------------

_TOP_KEYS = {
    "instance",
    "data_dir",
    "listen",
    "host_key",
    "authorized_keys",
    "limits",
    "durability",
    "hardware",
    "metrics",
    "node",
    "tiers",
    "admission",
    "peers",
    "relay",
    "event_loop",
}

# [admission] keys, each beside the OpenSSH sshd_config option it mirrors
ADMISSION_KEYS = {
    "max_startups": "MaxStartups",
    "per_source_max_startups": "PerSourceMaxStartups",
    "login_grace_time": "LoginGraceTime",
    "max_auth_tries": "MaxAuthTries",
    "per_source_penalties": "PerSourcePenalties",
    "per_source_penalty_exempt": "PerSourcePenaltyExemptList",
    "refusal_log_interval": "(none: refusals are summarised once per interval)",
}


def parse_endpoint(text: str, setting: str, *, loopback_only: bool = False) -> Endpoint:
    """``HOST:PORT`` or ``[V6]:PORT``; hostnames other than localhost are refused."""
    if not isinstance(text, str):
        raise ConfigError(f"{setting}: expected a string 'HOST:PORT', got {text!r}")
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\S+)|([^:\s\[\]]+):(\S+)", text)
    if not m:
        raise ConfigError(f"{setting}: {text!r} is not HOST:PORT (for example 127.0.0.1:22222)")
    host = m.group(1) or m.group(3)
    port = parse_port(m.group(2) if m.group(1) else m.group(4), setting)
    if host == "localhost":
        host = "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"{setting}: {host!r} is not an IP address (use 127.0.0.1 or an interface address)"
        ) from None
    if loopback_only and not addr.is_loopback:
        raise ConfigError(f"{setting}: {text} is not a loopback address; only 127.0.0.1 is allowed")
    return Endpoint(host, port)


def parse_port(value: object, setting: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{setting}: port must be a number 1-65535, got {value!r}")
    try:
        port = int(value) if isinstance(value, int | str) else -1
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ConfigError(f"{setting}: port must be a number 1-65535, got {value!r}")
    return port


class _Table:
    """One TOML table being read: every key must be consumed, types are checked."""

    def __init__(self, data: object, name: str, allowed: set[str]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: expected a table, got {type(data).__name__}")
        unknown = sorted(set(data) - allowed)
        if unknown:
            where = f"{name}." if name else ""
            raise ConfigError(
                f"unknown key '{where}{unknown[0]}' in config"
                f" (allowed here: {', '.join(sorted(allowed))})"
            )
        self.data: dict[str, Any] = data
        self.name = name

    def key(self, k: str) -> str:
        return f"{self.name}.{k}" if self.name else k

    def get(self, k: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if k not in self.data:
            return default
        v = self.data[k]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(v, bool) and bool not in kinds:
            raise ConfigError(f"{self.key(k)}: expected {_kind_name(kinds)}, got {v!r}")
        if not isinstance(v, kinds):
            raise ConfigError(f"{self.key(k)}: expected {_kind_name(kinds)}, got {v!r}")
        return v

    def positive(self, k: str, default: int) -> int:
        v: int = self.get(k, int, default)
        if v <= 0:
            raise ConfigError(f"{self.key(k)}: must be a positive integer, got {v}")
        return v


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _resolve_hw_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """KME certificate paths in the config file are relative to the file."""
    kme = raw.get("kme")
    if not isinstance(kme, dict):
        return raw
    fixed = dict(kme)
    for k in ("cert", "key", "ca"):
        if isinstance(fixed.get(k), str):
            fixed[k] = str(_path(base, fixed[k]))
    return {**raw, "kme": fixed}


_PEER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_peers(raw: object, base: Path) -> tuple[PeerConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("peers: expected [[peers]] tables")
    peers: list[PeerConfig] = []
    for n, entry in enumerate(raw):
        where = f"peers[{n}]"
        t = _Table(
            entry,
            where,
            {"name", "address", "host_key", "known_hosts", "identity", "user", "qkd"},
        )
        name = t.get("name", str, "")
        if not _PEER_NAME.fullmatch(name):
            raise ConfigError(f"{where}.name: give 1-64 of [A-Za-z0-9_.-], got {name!r}")
        if name in {p.name for p in peers}:
            raise ConfigError(f"{where}.name: peer {name!r} is listed twice")
        address = parse_endpoint(t.get("address", str, ""), f"{where}.address")
        host_key = t.get("host_key", str, None)
        known_hosts = t.get("known_hosts", str, None)
        if (host_key is None) == (known_hosts is None):
            raise ConfigError(
                f"{where}: pin the peer's host key with exactly one of host_key "
                "(a known_hosts line) or known_hosts (a file)"
            )
        identity = t.get("identity", str, None)
        if identity is None:
            raise ConfigError(f"{where}.identity: the private key this sidecar uses for {name}")
        qkd_raw = t.get("qkd", dict, None)
        peers.append(
            PeerConfig(
                name=name,
                address=address,
                identity=_path(base, identity),
                host_key=host_key,
                known_hosts=None if known_hosts is None else _path(base, known_hosts),
                user=t.get("user", str, None),
                qkd=None if qkd_raw is None else _parse_qkd(qkd_raw, f"{where}.qkd", base),
            )
        )
    return tuple(peers)


def _parse_qkd(raw: dict[str, Any], where: str, base: Path) -> PeerQKD:
    fields = ("kme", "certificate", "key", "ca", "sae_id", "peer_sae_id")
    t = _Table(raw, where, set(fields))
    values = {k: t.get(k, str, None) for k in fields}
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    if not str(values["kme"]).lower().startswith("https://"):
        raise ConfigError(f"{where}.kme: the KME is reached over TLS only (https://...)")
    return PeerQKD(
        kme=values["kme"],
        certificate=_path(base, values["certificate"]),
        key=_path(base, values["key"]),
        ca=_path(base, values["ca"]),
        sae_id=values["sae_id"],
        peer_sae_id=values["peer_sae_id"],
    )


def parse_relay(raw: object) -> RelaySettings:
    t = _Table(raw, "relay", set(RelaySettings.__dataclass_fields__))
    low = float(t.get("reconnect_min", (int, float), RelaySettings.reconnect_min))
    high = float(t.get("reconnect_max", (int, float), RelaySettings.reconnect_max))
    if not 0 < low <= high <= 3600:
        raise ConfigError(
            f"relay: need 0 < reconnect_min <= reconnect_max <= 3600, got {low} and {high}"
        )
    batch = t.positive("batch", RelaySettings.batch)
    if batch > _SERVICE.max_batch:  # what every receiver accepts in one relay request
        raise ConfigError(f"relay.batch: at most {_SERVICE.max_batch}, got {batch}")
    timeout = float(t.get("request_timeout", (int, float), RelaySettings.request_timeout))
    if not 0 < timeout <= 3600:
        raise ConfigError(f"relay.request_timeout: must be 0-3600 seconds, got {timeout}")
    return RelaySettings(
        batch,
        low,
        high,
        t.positive("backlog_warning", 10_000),
        timeout,
        t.positive("max_peer_keys", RelaySettings.max_peer_keys),
    )


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def load(path: Path | None) -> DaemonConfig:
    """Read a config file (or the embedded defaults when ``path`` is None)."""
    if path is None:
        return DaemonConfig()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"config {path}: cannot read ({e.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {path}: not valid TOML ({e})") from None
    try:
        return from_dict(data, base=path.parent.resolve())
    except ConfigError as e:
        raise ConfigError(f"config {path}: {e}") from None


def from_dict(data: dict[str, Any], base: Path) -> DaemonConfig:
    """Build a config from parsed TOML; relative paths are relative to ``base``."""
    top = _Table(data, "", _TOP_KEYS)
    instance = top.get("instance", str, DEFAULT_INSTANCE)
    data_dir = _path(base, top.get("data_dir", str, f"data/{instance}"))
    listen = parse_endpoint(
        top.get("listen", str, f"{DEFAULT_HOST}:{DEFAULT_PORT}"), "listen", loopback_only=False
    )
    host_key = top.get("host_key", str, None)
    auth = top.get("authorized_keys", str, None)
    loop_name = parse_event_loop(top.get("event_loop", str, event_loop.DEFAULT), "event_loop")

    lt = _Table(top.get("limits", dict, {}), "limits", set(Limits.__dataclass_fields__))
    rate = float(lt.get("submits_per_second", (int, float), Limits.submits_per_second))
    if rate < 0:
        raise ConfigError(f"limits.submits_per_second: must be >= 0 (0 = off), got {rate}")
    limits = Limits(
        submits_per_second=rate,
        **{
            k: lt.positive(k, getattr(Limits(), k))
            for k in Limits.__dataclass_fields__
            if k != "submits_per_second"
        },
    )

    dt = _Table(top.get("durability", dict, {}), "durability", set(Durability.__dataclass_fields__))
    policy = dt.get("policy", str, "default")
    if policy not in ("default", "sync"):
        raise ConfigError(f"durability.policy: must be 'default' or 'sync', got {policy!r}")
    timeout = float(dt.get("shutdown_timeout", (int, float), 10.0))
    if not 0 < timeout <= 600:
        raise ConfigError(f"durability.shutdown_timeout: must be 0-600 seconds, got {timeout}")
    window = float(dt.get("dedup_window", (int, float), DEFAULT_DEDUP_WINDOW))
    if not 0 < window <= 7 * 86400:
        raise ConfigError(f"durability.dedup_window: must be 0-604800 seconds, got {window}")
    durability = Durability(
        policy,
        dt.positive("compact_bytes", Durability.compact_bytes),
        timeout,
        window,
        dt.positive("dedup_max_entries", DEFAULT_DEDUP_ENTRIES),
    )

    hw_raw = top.get("hardware", dict, {})
    try:
        hardware = HardwareConfig.from_dict(_resolve_hw_paths(hw_raw, base))
    except HardwareConfigError as e:
        raise ConfigError(f"hardware: {e.detail}") from None

    mt = _Table(top.get("metrics", dict, {}), "metrics", {"listen"})
    metrics_addr = mt.get("listen", str, f"{DEFAULT_HOST}:{DEFAULT_METRICS_PORT}")
    metrics = (
        None
        if metrics_addr == ""
        else parse_endpoint(metrics_addr, "metrics.listen", loopback_only=True)
    )

    nt = _Table(
        top.get("node", dict, {}),
        "node",
        {"socket", "socket_group", "http", "first_request_timeout", *_NODE_LIMITS},
    )
    sock = nt.get("socket", str, None)
    http = nt.get("http", (str, bool), "")
    if http is True:
        http = DEFAULT_NODE_HTTP
    first = float(nt.get("first_request_timeout", (int, float), NodeEndpoint.first_request_timeout))
    if not 0 < first <= 3600:
        raise ConfigError(f"node.first_request_timeout: must be 0-3600 seconds, got {first}")
    node = NodeEndpoint(
        socket=_path(base, sock) if sock else None,
        socket_group=nt.get("socket_group", str, None),
        http=parse_endpoint(http, "node.http", loopback_only=True) if http else None,
        first_request_timeout=first,
        **{k: nt.positive(k, getattr(NodeEndpoint(None), k)) for k in _NODE_LIMITS},
    )

    tiers = parse_tiers(top.get("tiers", dict, {}))
    peers = parse_peers(top.get("peers", list, []), base)
    relay = parse_relay(top.get("relay", dict, {}))
    admission = parse_admission(top.get("admission", dict, {}))

    cfg = DaemonConfig(
        instance=instance,
        data_dir=data_dir,
        listen=listen,
        host_key=_path(base, host_key) if host_key else None,
        authorized_keys=_path(base, auth) if auth else None,
        limits=limits,
        durability=durability,
        hardware=hardware,
        metrics=metrics,
        node=node,
        tiers=tiers,
        admission=admission,
        peers=peers,
        relay=relay,
        event_loop=loop_name,
        embedded_defaults=False,
    )
    check_values(cfg)
    return cfg


def parse_event_loop(name: str, setting: str) -> str:
    if name not in event_loop.NAMES:
        raise ConfigError(f"{setting}: {name!r} is not one of {', '.join(event_loop.NAMES)}")
    return name


def parse_admission(raw: dict[str, Any], base: AdmissionLimits | None = None) -> AdmissionLimits:
    """The ``[admission]`` table (or the flags): OpenSSH's connection admission."""
    at = _Table(raw, "admission", set(ADMISSION_KEYS))
    cur = base or AdmissionLimits()
    try:
        startups = cur.max_startups
        if "max_startups" in raw:
            startups = parse_startups(at.get("max_startups", str, ""))
        penalties: Penalties = cur.penalties
        if "per_source_penalties" in raw:
            penalties = parse_penalties(at.get("per_source_penalties", str, ""))
        exempt = cur.penalty_exempt
        if "per_source_penalty_exempt" in raw:
            values = at.get("per_source_penalty_exempt", list, [])
            if not all(isinstance(v, str) for v in values):
                raise ValueError("per_source_penalty_exempt: a list of addresses or CIDRs")
            try:
                exempt = parse_networks(values)
            except ValueError as e:
                raise ValueError(f"per_source_penalty_exempt: {e}") from None
        return AdmissionLimits(
            max_startups=startups,
            per_source_max_startups=at.positive(
                "per_source_max_startups", cur.per_source_max_startups
            ),
            login_grace_seconds=float(
                at.get("login_grace_time", (int, float), cur.login_grace_seconds)
            ),
            max_auth_tries=at.positive("max_auth_tries", cur.max_auth_tries),
            penalties=penalties,
            penalty_exempt=exempt,
            refusal_log_seconds=float(
                at.get("refusal_log_interval", (int, float), cur.refusal_log_seconds)
            ),
        )
    except ValueError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith("admission") else f"admission.{msg}") from None


def parse_tiers(raw: dict[str, Any]) -> Tiers:
    """The ``[tiers]`` table: value thresholds, host keys per tier, entropy, sealing."""
    tt = _Table(raw, "tiers", {"value_thresholds", "host_keys", "entropy", "sealing"})
    bounds = tt.get("value_thresholds", list, None)
    hk = _Table(tt.get("host_keys", dict, {}), "tiers.host_keys", {"2", "3", "4"})
    host_keys: dict[int, list[str]] = {}
    for tier in ("2", "3", "4"):
        algs = hk.get(tier, list, None)
        if algs is not None:
            if not algs or not all(isinstance(a, str) for a in algs):
                raise ConfigError(f"tiers.host_keys.{tier}: a non-empty list of algorithm names")
            host_keys[int(tier)] = algs
    try:
        policy = TierPolicy.from_values(bounds, host_keys)
    except ValueError as e:
        raise ConfigError(f"tiers.value_thresholds: {e}") from None
    et = _Table(tt.get("entropy", dict, {}), "tiers.entropy", {"interval", "bytes"})
    interval = float(et.get("interval", (int, float), EntropyPublishing.interval))
    size = et.positive("bytes", EntropyPublishing.bytes)
    if interval < 0 or size > 4096:
        raise ConfigError("tiers.entropy: interval >= 0 seconds and bytes 1-4096")
    st = _Table(
        tt.get("sealing", dict, {}),
        "tiers.sealing",
        {"enabled", "aead", "rekey_frames", "rekey_seconds"},
    )
    aead_name = st.get("aead", str, Aead.AES_256_GCM.value)
    try:
        aead = Aead(aead_name)
    except ValueError:
        choices = ", ".join(a.value for a in Aead)
        raise ConfigError(f"tiers.sealing.aead: {aead_name!r} is not one of {choices}") from None
    seconds = float(st.get("rekey_seconds", (int, float), Sealing.rekey_seconds))
    if seconds <= 0:
        raise ConfigError("tiers.sealing.rekey_seconds: must be positive")
    sealing = Sealing(
        enabled=st.get("enabled", bool, True),
        aead=aead,
        rekey_frames=st.positive("rekey_frames", Sealing.rekey_frames),
        rekey_seconds=seconds,
    )
    return Tiers(policy, EntropyPublishing(interval, size), sealing)


def override(
    cfg: DaemonConfig,
    *,
    instance: str | None = None,
    data_dir: Path | None = None,
    listen: str | None = None,
    port: int | None = None,
    host_key: Path | None = None,
    authorized_keys: Path | None = None,
    metrics: str | None = None,
    node_http: str | None = None,
    admission: dict[str, Any] | None = None,
    event_loop_name: str | None = None,
) -> DaemonConfig:
    """Apply command-line flags on top of the file (or the embedded defaults)."""
    if instance is not None:
        cfg = replace(cfg, instance=instance)
        if data_dir is None and cfg.embedded_defaults:
            cfg = replace(cfg, data_dir=Path("data") / instance)
    if data_dir is not None:
        cfg = replace(cfg, data_dir=data_dir)
    if listen is not None:
        cfg = replace(cfg, listen=parse_endpoint(listen, "--listen"))
    if port is not None:
        cfg = replace(cfg, listen=Endpoint(cfg.listen.host, parse_port(port, "--port")))
    if host_key is not None:
        cfg = replace(cfg, host_key=host_key)
    if authorized_keys is not None:
        cfg = replace(cfg, authorized_keys=authorized_keys)
    if metrics is not None:
        m = None if metrics == "" else parse_endpoint(metrics, "--metrics", loopback_only=True)
        cfg = replace(cfg, metrics=m)
    if node_http is not None:
        h = (
            None
            if node_http == ""
            else parse_endpoint(node_http, "--node-http", loopback_only=True)
        )
        cfg = replace(cfg, node=replace(cfg.node, http=h))
    if admission:
        cfg = replace(cfg, admission=parse_admission(admission, cfg.admission))
    if event_loop_name is not None:
        cfg = replace(cfg, event_loop=parse_event_loop(event_loop_name, "--event-loop"))
    check_values(cfg)
    return cfg


def service_limits(cfg: DaemonConfig) -> ServiceLimits:
    """The SSH service's limits from the daemon's config (ValueError if inconsistent)."""
    return ServiceLimits(
        max_frame_bytes=cfg.limits.max_frame_bytes,
        max_in_flight_per_channel=cfg.limits.max_in_flight,
        max_connections=cfg.limits.max_connections,
        submits_per_second=cfg.limits.submits_per_second,
        submit_burst=cfg.limits.submit_burst,
        drain_seconds=cfg.durability.shutdown_timeout / 2,
        admission=cfg.admission,
    )


def check_values(cfg: DaemonConfig) -> None:
    try:
        service_limits(cfg)
    except ValueError as e:
        raise ConfigError(f"limits: {e}") from None
    if not _INSTANCE_RE.match(cfg.instance):
        raise ConfigError(
            f"instance: {cfg.instance!r} must be lowercase letters, digits, '-' or '_' (max 63)"
        )


# ---- checks against the machine (still before listening) ------------------------


def check_socket_group(group: str | None) -> int | None:
    """The gid of ``node.socket_group``; the group must exist and, unless we are root,
    be one of ours (only then may we give the socket to it)."""
    if group is None:
        return None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"node.socket_group: no group named {group!r}") from None
    if os.geteuid() != 0 and gid != os.getegid() and gid not in os.getgroups():
        raise ConfigError(
            f"node.socket_group: this user is not in group {group!r}, so it cannot give "
            "the socket to it (add the group: SupplementaryGroups= in a drop-in)"
        )
    return gid


UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, the last one a NUL


def check_socket_path(path: Path, data_dir: Path) -> None:
    """``node.socket`` can be bound: its directory exists (the data dir is made at
    start) and the path fits a unix socket address."""
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ConfigError(
            f"node.socket: {path}: longer than a unix socket path may be ({UNIX_PATH_MAX} bytes)"
        )
    parent = path.parent
    if os.path.abspath(parent) != os.path.abspath(data_dir) and not parent.is_dir():
        raise ConfigError(f"node.socket: {path}: no directory {parent}")


def check_readable(path: Path, setting: str) -> bytes:
    """Read a file the daemon needs; a failure names the setting and the path."""
    try:
        with path.open("rb") as f:
            return f.read()
    except IsADirectoryError:
        raise ConfigError(f"{setting}: {path} is a directory, not a key file") from None
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {path} ({e.strerror})") from None


def check_kme_tls(cert: str, key: str, ca: str) -> None:
    """The KME's mutual-TLS files load (else the start failed later, naming no file)."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except (ssl.SSLError, ValueError) as e:
        raise ConfigError(f"hardware.kme.ca: {ca} is not a usable CA certificate ({e})") from None
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as e:
        raise ConfigError(
            f"hardware.kme.cert, hardware.kme.key: {cert} and {key} are not a usable "
            f"client certificate and its key ({e})"
        ) from None


def prepare_data_dir(path: Path) -> None:
    """Create the data dir (0700) and prove it is writable with a real write + fsync."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"data_dir: {path} is not a directory")
    try:
        make_dirs(path)
    except OSError as e:
        if _full(e):
            raise DiskFull(f"data_dir: {path}: no space left on the device") from None
        raise ConfigError(f"data_dir: cannot create {path} ({e.strerror or e})") from None
    probe = path / f".write-test.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as e:
        if _full(e):
            raise DiskFull(
                f"data_dir: {path}: no space left on the device (free some and start again)"
            ) from None
        raise ConfigError(f"data_dir: {path} is not writable ({e.strerror})") from None
