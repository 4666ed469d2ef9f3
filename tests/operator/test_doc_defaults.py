"""Every default a doc states is the code's: each documented value is read back through
the code's own parser and compared with the default the code uses when the key is absent
(docs/operations.md, docs/hardware.md, docs/protocol.md, README.md)."""

from __future__ import annotations

import argparse
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram

from hardware.config import HEALTH_KEYS, HardwareConfig, KMEConfig, SerialPortConfig
from sidecar.daemon import serve_cli
from sidecar.daemon.config import ConfigError, DaemonConfig, NodeEndpoint, from_dict, load
from sidecar.daemon.metrics import SidecarMetrics
from tests.subprocesses import REPO
from transport.client import DEFAULT_IDENTITIES
from transport.protocol import DEFAULT_PORT

DOCS = REPO / "docs"


def toml_block(path: Path, after: str) -> dict[str, Any]:
    text = path.read_text()
    block = re.search(re.escape(after) + r".*?```toml\n(.*?)```", text, re.S)
    assert block is not None, after
    return tomllib.loads(block.group(1))


OPERATIONS = toml_block(DOCS / "operations.md", "## Config file reference")
# keys of the reference that show an example, not a default (their comments say so)
EXAMPLES_ONLY = {
    "node": {"socket", "socket_group", "http"},
    "tiers": {"host_keys"},
    "hardware": {"serial_ports", "kme"},
}


@pytest.mark.parametrize(
    "section", ["limits", "durability", "tiers", "metrics", "relay", "node", "admission"]
)
def test_operations_reference_values_are_the_defaults(section: str, tmp_path: Path) -> None:
    documented = {
        k: v for k, v in OPERATIONS[section].items() if k not in EXAMPLES_ONLY.get(section, ())
    }
    parsed = from_dict({section: documented}, base=tmp_path)
    assert getattr(parsed, section) == getattr(DaemonConfig(), section), section


def test_operations_hardware_values_are_the_defaults(tmp_path: Path) -> None:
    documented = {
        k: v for k, v in OPERATIONS["hardware"].items() if k not in EXAMPLES_ONLY["hardware"]
    }
    assert HardwareConfig.from_dict(documented) == HardwareConfig()


def test_hardware_md_values_are_the_defaults() -> None:
    documented = toml_block(DOCS / "hardware.md", "## Configuration")["hardware"]
    keys = {"use_udev", "char_devices", "sample_bytes", "read_timeout", "check_interval",
            "min_rate_fraction", "floor", "ceiling", "health"}  # fmt: skip
    assert HardwareConfig.from_dict({k: documented[k] for k in keys}) == HardwareConfig()


def test_listen_and_metrics_defaults_in_the_reference(tmp_path: Path) -> None:
    cfg = from_dict({"listen": OPERATIONS["listen"]}, base=tmp_path)
    assert cfg.listen == DaemonConfig().listen
    assert cfg.listen.port == DEFAULT_PORT


def test_embedded_defaults_as_readme_and_operations_state_them() -> None:
    cfg = load(None)
    readme = (REPO / "README.md").read_text()
    operations = (DOCS / "operations.md").read_text()
    embedded = re.search(
        r"\*\*Embedded defaults\*\*.*?instance `(\w+)`, data dir\s+`\./([\w/]+)`, SSH on "
        r"`([\d.]+):(\d+)`, metrics on `([\d.]+):(\d+)`, node socket\s+`\./([\w/.]+)`",
        operations,
        re.S,
    )
    assert embedded, "the embedded defaults sentence changed shape"
    instance, data_dir, host, port, mhost, mport, sock = embedded.groups()
    assert (instance, Path(data_dir), host, int(port)) == (
        cfg.instance,
        cfg.data_dir,
        cfg.listen.host,
        cfg.listen.port,
    )
    assert cfg.metrics is not None
    assert (mhost, int(mport)) == (cfg.metrics.host, cfg.metrics.port)
    assert Path(sock) == cfg.node_socket_path
    first_run = f"(./{cfg.data_dir}, loopback:{cfg.listen.port})"
    assert first_run in readme
    assert f"metrics http://{cfg.metrics.host}:{cfg.metrics.port}/metrics" in readme
    assert f"listening {cfg.listen} (instance {cfg.instance})" in readme


def test_protocol_default_port() -> None:
    protocol = (DOCS / "protocol.md").read_text()
    assert f"(default {DEFAULT_PORT}," in protocol
    assert f"`ssh -p {DEFAULT_PORT} host stats`" in protocol


def test_node_batch_cap() -> None:
    operations = (DOCS / "operations.md").read_text()
    cap = DaemonConfig().node.max_batch
    assert f"at most `node.max_batch` ({cap}) requests" in operations
    assert f"batch over {cap}" in operations


def markdown_table(path: Path, after: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table after the line ``after``."""
    lines = path.read_text().splitlines()
    start = lines.index(after)
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[first:end]]
    return cells[2:]  # below the header and its rule


def test_node_limits_table_is_the_code() -> None:
    rows = markdown_table(DOCS / "operations.md", "### Limits (`[node]`)")
    documented = {row[0].strip("`"): float(row[1]) for row in rows}
    code = NodeEndpoint(None)
    assert documented == {k: float(getattr(code, k)) for k in documented}
    node_keys = allowed_keys({"node": {}}, "node")
    assert set(documented) == node_keys - EXAMPLES_ONLY["node"]


def test_admission_table_is_the_code(tmp_path: Path) -> None:
    rows = markdown_table(DOCS / "operations.md", "## Connection admission")
    documented: dict[str, Any] = {}
    for key, _, default, *_ in rows:
        value = default.removesuffix(" s").strip("`")  # `10` s, `10:30:100`, none
        if value == "none":
            documented[key.strip("`")] = []
        elif value.isdigit():
            documented[key.strip("`")] = int(value)
        else:
            documented[key.strip("`")] = value
    parsed = from_dict({"admission": documented}, base=tmp_path)
    assert parsed.admission == DaemonConfig().admission
    assert set(documented) == allowed_keys({"admission": {}}, "admission")


A_PEER = {"name": "bob", "address": "127.0.0.1:22223", "host_key": "x", "identity": "id"}


def allowed_keys(data: dict[str, Any], where: str) -> set[str]:
    """The keys the config loader accepts at ``where``, as its own error lists them."""
    probe = data
    for part in where.split(".") if where else []:
        probe = probe[part] if isinstance(probe[part], dict) else probe[part][0]
    probe["no_such_key"] = 1
    with pytest.raises(ConfigError, match=r"allowed here: ") as info:
        from_dict(data, base=Path("/nonexistent"))
    return set(str(info.value).split("allowed here: ")[1].rstrip(")").split(", "))


@pytest.mark.parametrize(
    ("data", "where", "documented"),
    [
        ({}, "", lambda: OPERATIONS),
        ({"limits": {}}, "limits", lambda: OPERATIONS["limits"]),
        ({"durability": {}}, "durability", lambda: OPERATIONS["durability"]),
        ({"admission": {}}, "admission", lambda: OPERATIONS["admission"]),
        ({"metrics": {}}, "metrics", lambda: OPERATIONS["metrics"]),
        ({"relay": {}}, "relay", lambda: OPERATIONS["relay"]),
        ({"tiers": {}}, "tiers", lambda: OPERATIONS["tiers"]),
        ({"tiers": {"entropy": {}}}, "tiers.entropy", lambda: OPERATIONS["tiers"]["entropy"]),
        ({"tiers": {"sealing": {}}}, "tiers.sealing", lambda: OPERATIONS["tiers"]["sealing"]),
        ({"peers": [{}]}, "peers", lambda: PEER_KEYS),
        ({"peers": [{**A_PEER, "qkd": {}}]}, "peers.qkd", lambda: PEER_KEYS),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_key_the_loader_takes_is_in_the_reference(
    data: dict[str, Any], where: str, documented: Any
) -> None:
    """The reverse of the defaults tests: a key the code accepts and no doc shows."""
    assert allowed_keys(data, where) <= set(documented())


def test_every_node_key_is_documented() -> None:
    keys = allowed_keys({"node": {}}, "node")
    table = {
        row[0].strip("`") for row in markdown_table(DOCS / "operations.md", "### Limits (`[node]`)")
    }
    assert keys <= set(OPERATIONS["node"]) | table


def test_every_hardware_key_is_in_hardware_md() -> None:
    hardware = toml_block(DOCS / "hardware.md", "## Configuration")["hardware"]
    assert {f.name for f in fields(HardwareConfig)} <= set(hardware)
    assert set(HEALTH_KEYS) <= set(hardware["health"]) | {"alpha"}  # alpha: in its comment
    assert {f.name for f in fields(SerialPortConfig)} <= set(hardware["serial_ports"][0])
    assert {f.name for f in fields(KMEConfig)} <= set(hardware["kme"])


# relay.md's [[peers]] example, with its optional lines commented out (`# user = …`,
# the [peers.qkd] table): every key named there, commented or not
_RELAY_BLOCK = re.search(r"```toml\n(.*?)\[relay\]", (DOCS / "relay.md").read_text(), re.S)
assert _RELAY_BLOCK is not None
PEER_KEYS = {
    key
    for pair in re.findall(r"(\w+) = |\[peers\.(\w+)\]", _RELAY_BLOCK.group(1))
    for key in pair
    if key
}


def test_the_client_default_identities_are_protocol_mds() -> None:
    """A classical key is never offered by default: every server refuses it, and each
    refused key spends one of the connection's `max_auth_tries`."""
    protocol = (DOCS / "protocol.md").read_text()
    listed = re.search(
        r"Without `IdentityFile`, `~/\.qssh/(\w+)`\s+\(then\s+((?:`\w+`(?:,\s+)?)+)\)\s+is used",
        protocol,
    )
    assert listed is not None, "the default identities sentence changed shape"
    assert (listed.group(1), *re.findall(r"`(\w+)`", listed.group(2))) == DEFAULT_IDENTITIES


def test_every_serve_flag_is_in_the_flags_table() -> None:
    parser = argparse.ArgumentParser()
    serve_cli.configure(parser)
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    rows = markdown_table(DOCS / "operations.md", "## Starting")
    documented = {word for row in rows for word in re.findall(r"`(--[\w-]+)", row[0])}
    assert flags - {"--help"} <= documented


def test_the_metrics_table_is_what_the_exporter_serves() -> None:
    """Each `qssh_*` metric, its type and labels, both ways (counters get `_total`)."""
    metrics = SidecarMetrics("alice")
    served = {}
    for m in list(metrics.registry._collector_to_names):
        if isinstance(m, Counter | Gauge | Histogram):
            name = m._name + ("_total" if m._type == "counter" else "")
            served[name] = (m._type, tuple(m._labelnames))
    rows = markdown_table(DOCS / "operations.md", "## Metrics")
    documented = {}
    for cell, kind, *_ in rows:
        m = re.fullmatch(r"`(qssh_\w+)(?:\{(\w+)\})?`", cell)
        if m:
            documented[m.group(1)] = (kind, (m.group(2),) if m.group(2) else ())
    assert documented == served


CONFIG_SECTIONS = ("limits", "durability", "admission", "relay", "node", "tiers", "metrics")


@pytest.mark.parametrize(
    "doc", [*sorted(DOCS.glob("*.md")), REPO / "README.md"], ids=lambda p: p.name
)
def test_every_config_key_a_doc_names_is_one_the_loader_takes(doc: Path) -> None:
    """`section.key` in any doc is a real key (a renamed or invented one fails here)."""
    named = re.findall(r"`(" + "|".join(CONFIG_SECTIONS) + r")\.([a-z_]+)`", doc.read_text())
    wrong = [f"{s}.{k}" for s, k in named if k not in allowed_keys({s: {}}, s)]
    assert not wrong, wrong
