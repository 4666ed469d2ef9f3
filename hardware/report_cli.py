"""`qssh-sidecar hardware report [--json] [--sample-bytes N] [--config F]`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from hardware.config import HardwareConfig, HardwareConfigError
from hardware.probe import evaluate
from hardware.tier import TierDecision


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="hardware_command", required=True)
    rep = sub.add_parser("report", help="probe entropy hardware and the KME, print the tier")
    rep.add_argument("--json", action="store_true", help="machine-readable output")
    rep.add_argument("--sample-bytes", type=int, default=None, help="bytes sampled per device")
    rep.add_argument("--config", default=None, help="TOML file with a [hardware] section")


_KME_FILES = ("cert", "key", "ca")


def load_config(path: str | None) -> HardwareConfig:
    if path is None:
        return HardwareConfig()
    with open(path, "rb") as f:
        raw: dict[str, Any] = tomllib.load(f)
    hw = raw.get("hardware", {})
    kme = hw.get("kme") if isinstance(hw, dict) else None
    if isinstance(kme, dict):  # relative to the config file's directory, as serve reads it
        base = Path(path).resolve().parent
        fixed = {
            k: str(base / Path(v).expanduser()) if k in _KME_FILES and isinstance(v, str) else v
            for k, v in kme.items()
        }
        hw = {**hw, "kme": fixed}
    return HardwareConfig.from_dict(hw)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except (OSError, tomllib.TOMLDecodeError, HardwareConfigError) as exc:
        print(f"qssh-sidecar hardware: bad config: {exc}", file=sys.stderr)
        return 2
    if args.sample_bytes is not None and args.sample_bytes < 1:
        print("qssh-sidecar hardware: --sample-bytes must be positive", file=sys.stderr)
        return 2
    start = time.monotonic()
    decision = asyncio.run(evaluate(config, args.sample_bytes))
    elapsed = time.monotonic() - start
    if args.json:
        out = decision.to_json()
        out["probe_seconds"] = round(elapsed, 4)
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print_table(decision, elapsed)
    return 0


def print_table(decision: TierDecision, elapsed: float) -> None:
    # piped: as wide as the content (a terminal's width would cut the rows at 80)
    console = Console(width=None if sys.stdout.isatty() else 10_000)
    table = Table(title="Entropy hardware")
    for col in ("kind", "model", "ids", "path", "driver", "readable", "sampled", "rate B/s",
                "health", "RCT/APT fails", "error"):  # fmt: skip
        table.add_column(col)
    for d in decision.devices:
        ids = f"{d.vendor_id}:{d.product_id}" if d.vendor_id else "-"
        counts = d.health_counts
        table.add_row(
            d.kind.value + (" (sim)" if d.simulated else ""),
            d.model,
            ids,
            d.path or "-",
            d.driver or "-",
            "yes" if d.readable else "no",
            str(d.bytes_sampled),
            f"{d.rate_bps:,.0f}" if d.rate_bps else "-",
            d.health.value,
            f"{counts.get('rct_failures', 0)}/{counts.get('apt_failures', 0)}" if counts else "-",
            d.error or "",
        )
    if not decision.devices:
        table.add_row("-", "no entropy hardware found", *["-"] * 9)
    console.print(table)
    k = decision.kme
    if k is None:
        console.print("KME: not configured")
    else:
        state = "healthy" if k.healthy else f"NOT usable: {k.error or 'no stored keys'}"
        console.print(
            f"KME {k.url}: {state}; stored keys {k.stored_key_count}, key size {k.key_size}"
        )
    sim = " [yellow](SIMULATED hardware)[/yellow]" if decision.simulated else ""
    console.print(f"[bold]Tier {int(decision.tier)} {decision.tier.label}[/bold]{sim}")
    for reason in decision.reasons:
        console.print(f"  - {reason}", markup=False)
    console.print(f"probe took {elapsed:.2f} s")
