"""results.png: ours next to each baseline, one panel per unit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display here; must precede pyplot
import matplotlib.pyplot as plt

PANELS = (
    ("time per durable op (us, lower is better)", ("us/op", "us/msg"), False),
    ("throughput (ops/s, higher is better, log scale)", ("ops/s",), True),
    ("SSH handshake (ms, lower is better, log scale)", ("ms",), True),
)
OURS, BASELINE = "#1f77b4", "#bbbbbb"


def plot_comparisons(rows: dict[str, dict[str, Any]], machine: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(10, 11))
    for ax, (title, units, log) in zip(axes, PANELS, strict=True):
        chosen = [r for r in rows.values() if r["unit"] in units]
        bars: dict[str, tuple[float, str]] = {}  # a bar shared by several rows drawn once
        for r in chosen:
            for name, value, colour in (
                (r["ours"], r["ours_value"], OURS),
                (r["baseline"], r["baseline_value"], BASELINE),
            ):
                # the same case measured beside another baseline: a bar of its own
                label = (
                    name
                    if bars.get(name, (value,))[0] == value
                    else f"{name} (beside {r['baseline']})"
                )
                bars.setdefault(label, (value, colour))
        labels = list(bars)
        values = [v for v, _ in bars.values()]
        colours = [c for _, c in bars.values()]
        positions = list(range(len(values)))[::-1]
        ax.barh(positions, values, color=colours)
        ax.set_yticks(positions, labels, fontsize=8)
        for y, v in zip(positions, values, strict=True):
            text = f"{v:,.0f}" if v >= 1000 else f"{v:.4g}"
            ax.annotate(text, (v, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)  # fmt: skip
        if log:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
    fig.suptitle(
        f"qssh-sidecar (blue) vs baselines (grey): medians of interleaved rounds\n"
        f"{machine.get('nproc')} CPUs, {machine.get('cpu')}, kernel {machine.get('kernel')}, "
        f"Python {machine.get('python')}, {machine.get('date')}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)
