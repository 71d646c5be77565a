"""Regenerate (or, with --check, verify) the checked-in dashboards/*.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infermeter.dashboards.builder import render, with_cluster
from infermeter.dashboards.catalogue import DASHBOARDS
from infermeter.rules.cli import label_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infermeter.dashboards")
    parser.add_argument("--out", type=Path, default=Path("dashboards"), help="Default: %(default)s")
    parser.add_argument("--check", action="store_true", help="Fail if a file is out of date.")
    parser.add_argument(
        "--cluster-label",
        type=label_name,
        default="",
        metavar="LABEL",
        help="Dashboards for several clusters in one Prometheus (Thanos, Mimir): a cluster "
        "variable from this label, in every selector. Default: none (the shipped files).",
    )
    args = parser.parse_args(argv)
    stale = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name, dashboard in DASHBOARDS.items():
        path = args.out / name
        if args.cluster_label:
            dashboard = with_cluster(dashboard, args.cluster_label)
        text = render(dashboard)
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run: python -m infermeter.dashboards")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
