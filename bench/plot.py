"""The PNG of `make bench`: latency each proxy adds as concurrency grows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display; before pyplot is imported

import matplotlib.pyplot as plt

SERIES = (
    ("added_ttft_p50_ms", "added TTFT p50", "-"),
    ("added_ttft_p99_ms", "added TTFT p99", "--"),
    ("added_event_delay_p99_ms", "added per-event delay p99", ":"),
)
COLOURS = {"infermeter": "tab:orange", "nginx": "tab:blue"}


def latency_vs_concurrency(result: dict[str, Any], out: Path) -> None:
    levels = sorted(result["latency"], key=int)
    x = [int(level) for level in levels]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for path in ("nginx", "infermeter"):
        if path not in result["latency"][levels[0]]:
            continue
        for key, label, style in SERIES:
            y = [result["latency"][level][path][key] for level in levels]
            ax.plot(x, y, style, marker="o", color=COLOURS[path], label=f"{path}: {label}")
    ax.axhline(5.0, color="grey", linewidth=0.8)
    ax.text(x[0], 5.3, "per-event target 5 ms", color="grey", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("ms added vs direct")
    machine = result["machine"]
    ax.set_title(
        f"Latency added by the proxy ({machine['cpus']} CPUs, Python {machine['python']}, "
        f"{result['date']})",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
