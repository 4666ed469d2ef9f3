"""`HardwareConfig`: the `[hardware]` TOML section as typed, validated values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hardware.health import DEFAULT_ALPHA, DEFAULT_H, DEFAULT_WINDOW, HealthParameters
from hardware.reports import SourceKind
from hardware.tier import Tier

HANDSHAKES = ("auto", "none", "dtr", "onerng")


class HardwareConfigError(ValueError):
    """The `[hardware]` section is invalid; ``detail`` names the key and the problem."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"[hardware]: {detail}")
        self.detail = detail


@dataclass(frozen=True)
class SerialPortConfig:
    path: str
    handshake: str = "auto"  # auto: from the USB ids (TrueRNG → dtr, OneRNG → onerng)
    kind: SourceKind | None = None  # None: from the USB ids; set only for simulators/unknowns
    model: str = ""
    baudrate: int = 115200
    expected_rate_bps: float | None = None
    simulated: bool = False


@dataclass(frozen=True)
class RemoteEndpointConfig:
    name: str
    url: str
    expected_rate_bps: float | None = None


@dataclass(frozen=True)
class KMEConfig:
    url: str
    sae_id: str
    slave_sae_id: str
    cert: str
    key: str
    ca: str
    timeout: float = 5.0
    min_key_size: int = 256
    simulated: bool = False


@dataclass(frozen=True)
class HardwareConfig:
    serial_ports: tuple[SerialPortConfig, ...] = ()
    char_devices: tuple[str, ...] = ("/dev/qrandom*", "/dev/hwrng")
    remote_endpoints: tuple[RemoteEndpointConfig, ...] = ()
    kme: KMEConfig | None = None
    floor: Tier = Tier.BASIC_PQ
    ceiling: Tier = Tier.QUANTUM_SECURED
    health: HealthParameters = field(default_factory=HealthParameters)
    check_interval: float = 60.0
    sample_bytes: int = 4096
    read_timeout: float = 2.0
    min_rate_fraction: float = 0.25
    use_udev: bool = True

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> HardwareConfig:
        known = {
            "serial_ports", "char_devices", "remote_endpoints", "kme", "floor", "ceiling",
            "health", "check_interval", "sample_bytes", "read_timeout", "min_rate_fraction",
            "use_udev",
        }  # fmt: skip
        _check_keys(raw, known, "")
        try:
            cfg = cls(
                serial_ports=tuple(_serial(p) for p in _list(raw, "serial_ports", ())),
                char_devices=tuple(
                    _paths(_list(raw, "char_devices", ("/dev/qrandom*", "/dev/hwrng")))
                ),
                remote_endpoints=tuple(_remote(e) for e in _list(raw, "remote_endpoints", ())),
                kme=_kme(raw["kme"]) if raw.get("kme") else None,
                floor=_tier(raw, "floor", 1),
                ceiling=_tier(raw, "ceiling", 4),
                health=_health(raw.get("health", {})),
                check_interval=float(raw.get("check_interval", 60.0)),
                sample_bytes=int(raw.get("sample_bytes", 4096)),
                read_timeout=float(raw.get("read_timeout", 2.0)),
                min_rate_fraction=float(raw.get("min_rate_fraction", 0.25)),
                use_udev=_bool(raw, "use_udev", True),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, HardwareConfigError):
                raise
            raise HardwareConfigError(str(exc)) from exc
        if cfg.floor > cfg.ceiling:
            raise HardwareConfigError("floor is above ceiling")
        if cfg.sample_bytes < 1 or cfg.check_interval <= 0 or cfg.read_timeout <= 0:
            raise HardwareConfigError("sample_bytes, check_interval, read_timeout must be > 0")
        return cfg


_SERIAL_KEYS = {
    "path", "handshake", "kind", "model", "baudrate", "expected_rate_bps", "simulated",
}  # fmt: skip
_KME_KEYS = {
    "url", "sae_id", "slave_sae_id", "cert", "key", "ca", "timeout", "min_key_size", "simulated",
}  # fmt: skip
HEALTH_KEYS = {"alpha", "alpha_log2", "entropy_bits", "window", "startup_samples"}


def _check_keys(
    raw: object, known: set[str], where: str, required: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    """``raw`` as a table of only ``known`` keys (a typo must not fall back to a default)."""
    prefix = f"{where}: " if where else ""
    if not isinstance(raw, Mapping):
        raise HardwareConfigError(f"{prefix}expected a table, got {raw!r}")
    unknown = set(raw) - known
    if unknown:
        raise HardwareConfigError(f"{prefix}unknown keys {sorted(unknown)}")
    for key in required:
        if key not in raw:
            raise HardwareConfigError(f"{prefix}missing key {key!r}")
    return raw


def _list(
    raw: Mapping[str, Any], key: str, default: tuple[Any, ...]
) -> list[Any] | tuple[Any, ...]:
    value = raw.get(key, default)
    if not isinstance(value, list | tuple):
        raise HardwareConfigError(f"{key}: expected a list of paths, got {value!r}")
    return value


def _paths(values: list[Any] | tuple[Any, ...]) -> list[str]:
    for v in values:
        if not isinstance(v, str):
            raise HardwareConfigError(f"char_devices: expected a list of paths, got {v!r}")
    return list(values)


def _tier(raw: Mapping[str, Any], key: str, default: int) -> Tier:
    try:
        return Tier.parse(raw.get(key, default))
    except ValueError as exc:
        raise HardwareConfigError(f"{key}: {exc}") from None


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise HardwareConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _remote(raw: object) -> RemoteEndpointConfig:
    e = _check_keys(raw, {"name", "url", "expected_rate_bps"}, "remote endpoint", ("name", "url"))
    return RemoteEndpointConfig(
        name=str(e["name"]),
        url=str(e["url"]),
        expected_rate_bps=_opt_float(e.get("expected_rate_bps")),
    )


def _serial(raw: Mapping[str, Any] | str) -> SerialPortConfig:
    if isinstance(raw, str):
        return SerialPortConfig(path=raw)
    path = raw.get("path") if isinstance(raw, Mapping) else None
    _check_keys(raw, _SERIAL_KEYS, f"serial port {path}", ("path",))
    handshake = str(raw.get("handshake", "auto"))
    if handshake not in HANDSHAKES:
        path = raw.get("path")
        raise HardwareConfigError(f"serial port {path}: handshake must be one of {HANDSHAKES}")
    kind = raw.get("kind")
    return SerialPortConfig(
        path=str(raw["path"]),
        handshake=handshake,
        kind=SourceKind(kind) if kind else None,
        model=str(raw.get("model", "")),
        baudrate=int(raw.get("baudrate", 115200)),
        expected_rate_bps=_opt_float(raw.get("expected_rate_bps")),
        simulated=bool(raw.get("simulated", False)),
    )


def _kme(raw: Mapping[str, Any]) -> KMEConfig:
    _check_keys(raw, _KME_KEYS, "kme", ("url", "sae_id", "slave_sae_id", "cert", "key", "ca"))
    url = str(raw["url"]).rstrip("/")
    if not url.lower().startswith("https://"):
        # QKD keys travel in the KME's answers: never over plain HTTP
        raise HardwareConfigError(f"kme.url must be an https:// URL (mutual TLS), not {url!r}")
    return KMEConfig(
        url=url,
        sae_id=str(raw["sae_id"]),
        slave_sae_id=str(raw["slave_sae_id"]),
        cert=str(raw["cert"]),
        key=str(raw["key"]),
        ca=str(raw["ca"]),
        timeout=float(raw.get("timeout", 5.0)),
        min_key_size=int(raw.get("min_key_size", 256)),
        simulated=bool(raw.get("simulated", False)),
    )


def _health(raw: Mapping[str, Any]) -> HealthParameters:
    _check_keys(raw, HEALTH_KEYS, "health")
    alpha = raw.get("alpha", DEFAULT_ALPHA)
    if "alpha_log2" in raw:
        alpha = 2.0 ** float(raw["alpha_log2"])
    params = HealthParameters(
        alpha=float(alpha),
        entropy_bits=float(raw.get("entropy_bits", DEFAULT_H)),
        window=int(raw.get("window", DEFAULT_WINDOW)),
        startup_samples=int(raw.get("startup_samples", 1024)),
    )
    params.rct_cutoff  # noqa: B018 - validates alpha and H now, not at first use
    return params


def _opt_float(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]
