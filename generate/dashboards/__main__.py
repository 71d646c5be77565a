"""Dashboards for several clusters in one Prometheus (Thanos, Mimir): `--cluster-label`.

The shipped `dashboards/*.json` come from `make generate`; this writes the cluster-aware
variant (a cluster variable from the label, in every selector) where you ask.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generate.dashboards.builder import render, with_cluster
from generate.dashboards.catalogue import DASHBOARDS
from infermeter.rules.cli import label_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generate.dashboards")
    parser.add_argument("--out", type=Path, required=True, help="Directory to write into.")
    parser.add_argument(
        "--cluster-label",
        type=label_name,
        required=True,
        metavar="LABEL",
        help="The label that names the cluster (e.g. cluster).",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, dashboard in DASHBOARDS.items():
        path = args.out / name
        path.write_text(render(with_cluster(dashboard, args.cluster_label)))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
