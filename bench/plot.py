"""The PNG of `make bench`: latency each proxy adds as concurrency grows.

Two panels (added TTFT, added per-event delay), p50 solid and p99 dashed, nginx and
infermeter in fixed colours, so the two proxies compare at a glance at every level.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

PANELS = (("ttft", "added TTFT"), ("event_delay", "added per-event delay"))
QUANTILES = (("p50", "-"), ("p99", "--"))
COLOURS = {"infermeter": "tab:orange", "nginx": "tab:blue"}
EVENT_TARGET_MS = 5.0


def latency_vs_concurrency(result: dict[str, Any], out: Path) -> None:
    import matplotlib  # here, not at import: `bench.run` imports this module, and so does
    # every xdist worker collecting the smoke test, which needs no matplotlib (~1 s of CPU)

    matplotlib.use("Agg")  # files only, no display; before pyplot is imported
    import matplotlib.pyplot as plt

    levels = sorted(result["latency"], key=int)
    x = [int(level) for level in levels]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110, sharey=True)
    for ax, (figure, title) in zip(axes, PANELS, strict=True):
        for path, colour in COLOURS.items():
            if path not in result["latency"][levels[0]]:
                continue
            for q, style in QUANTILES:
                key = f"added_{figure}_{q}_ms"
                y = [result["latency"][level][path][key] for level in levels]
                ax.plot(x, y, style, marker="o", markersize=4, color=colour, label=f"{path} {q}")
        if figure == "event_delay":
            ax.axhline(EVENT_TARGET_MS, color="grey", linewidth=0.8)
            ax.text(x[0], EVENT_TARGET_MS * 1.1, "p99 target 5 ms", color="grey", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xticks(x, [str(v) for v in x])
        ax.set_xlabel("concurrent streams")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("ms added vs direct (same run)")
    machine = result["machine"]
    upstream = result["upstream"]
    fig.suptitle(
        f"Latency added by the proxy: {upstream['tokens']} tokens, "
        f"{upstream['itl_s'] * 1000:g} ms apart ({machine['cpus']} CPUs, "
        f"Python {machine['python']}, {result['date']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    """Redraw the PNG from a bench.json (e.g. after changing the plot), without re-running."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("json", type=Path, nargs="?", default=Path("bench/results/bench.json"))
    args = parser.parse_args()
    result = json.loads(args.json.read_text())
    latency_vs_concurrency(result, args.json.with_name("latency_vs_concurrency.png"))


if __name__ == "__main__":
    main()
