"""Which way imports point (README "Import rules"), read from the source with ast.

- the queue core (``sidecar/`` outside ``sidecar/daemon/``) imports nothing from
  ``transport/``, ``hardware/`` or ``sidecar.daemon``;
- ``hardware/`` imports neither ``sidecar/`` nor ``transport/``;
- ``transport/`` imports only the core's public-type modules (``CORE_TYPES``) and the
  shared log-line format (``SHARED``), never the
  queue, the log, group commit or the daemon; of ``hardware/`` its library modules
  read only the tier (``hardware.tier``), its command-line entry points (``*_cli.py``)
  may wire in more;
- nothing below the daemon imports ``sidecar.daemon``.

Every import counts, also ones inside functions or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("sidecar", "transport", "hardware")
CORE_TYPES = frozenset(
    {
        "sidecar.errors",
        "sidecar.messages",
        "sidecar.state",
        "sidecar.handles",
        "sidecar.durable_fs",
        "sidecar.dedup",
    }
)
# besides the core's types, the one shared utility: the log-line format every CLI uses
SHARED = frozenset({"sidecar.logs"})


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported(path: Path) -> Iterator[str]:
    """Every module of ours that ``path`` imports (``from a import b`` counts as ``a.b``
    when ``b`` is a module)."""
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [
                f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names
            ]
        else:
            continue
        yield from (n for n in names if n.split(".")[0] in OURS)


def imports_of(folder: str) -> list[tuple[str, str]]:
    return [
        (module_name(path), name)
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in imported(path)
    ]


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_queue_core_imports_nothing_above_it() -> None:
    bad = [
        (mod, name)
        for mod, name in imports_of("sidecar")
        if not under(mod, "sidecar.daemon")
        and under(name, "transport", "hardware", "sidecar.daemon")
    ]
    assert bad == []


def test_hardware_imports_neither_the_queue_nor_the_transport() -> None:
    bad = [
        (mod, name) for mod, name in imports_of("hardware") if under(name, "sidecar", "transport")
    ]
    assert bad == []


def test_transport_uses_only_the_core_public_types() -> None:
    bad = [
        (mod, name)
        for mod, name in imports_of("transport")
        if under(name, "sidecar") and name not in CORE_TYPES | SHARED
    ]
    assert bad == []


def test_transport_reads_only_the_tier_from_hardware_outside_its_entry_points() -> None:
    bad = [
        (mod, name)
        for mod, name in imports_of("transport")
        if under(name, "hardware") and name != "hardware.tier" and not mod.endswith("_cli")
    ]
    assert bad == []


@pytest.mark.parametrize("folder", ["sidecar", "transport", "hardware"])
def test_only_the_daemon_imports_the_daemon(folder: str) -> None:
    bad = [
        (mod, name)
        for mod, name in imports_of(folder)
        if under(name, "sidecar.daemon") and not under(mod, "sidecar.daemon")
    ]
    assert bad == []


def test_the_rules_see_imports() -> None:
    """The scanner finds what is there (else every rule above would pass vacuously)."""
    found = set(imports_of("transport"))
    assert ("transport.service", "sidecar.errors") in found
    assert ("transport.client_cli", "hardware.kme") in found
    assert ("sidecar.daemon.wiring", "sidecar.daemon.config") in set(imports_of("sidecar"))


def test_importing_the_protocol_does_not_load_the_queue() -> None:
    code = (
        "import sys, transport.protocol\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sidecar', 'hardware')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loaded = set(ast.literal_eval(out))
    assert "sidecar.queue" not in loaded
    assert not {m for m in loaded if under(m, "sidecar.wal", "sidecar.commit", "hardware")}
    assert loaded <= CORE_TYPES | {"sidecar"}


def test_reading_the_tier_does_not_load_device_or_network_libraries() -> None:
    code = "import sys, transport.tiers\nprint(sorted(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    loaded = set(ast.literal_eval(out))
    assert loaded & {"serial", "pyudev", "httpx", "hardware.monitor", "sidecar.queue"} == set()


@pytest.mark.parametrize("package", ["sidecar", "hardware"])
def test_every_lazy_re_export_resolves_to_its_home(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        home = module._HOME_OF[name]
        assert value is getattr(importlib.import_module(home), name)
    assert set(module.__all__) == set(module._HOME_OF)
    with pytest.raises(AttributeError):
        _ = module.NoSuchName
