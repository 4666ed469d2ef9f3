"""Every default a doc states is the code's: each documented value is read back through
the code's own parser and compared with the default the code uses when the key is absent
(docs/operations.md, docs/hardware.md, docs/protocol.md, README.md)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hardware.config import HardwareConfig
from sidecar.daemon.config import DaemonConfig, from_dict, load
from tests.subprocesses import REPO
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
    "section", ["durability", "tiers", "metrics", "relay", "node", "admission"]
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
