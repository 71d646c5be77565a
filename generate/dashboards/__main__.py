"""Regenerate (or, with --check, verify) the checked-in dashboards/*.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generate.dashboards.builder import render
from generate.dashboards.catalogue import DASHBOARDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generate.dashboards")
    parser.add_argument("--out", type=Path, default=Path("dashboards"), help="Default: %(default)s")
    parser.add_argument("--check", action="store_true", help="Fail if a file is out of date.")
    args = parser.parse_args(argv)
    stale = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name, dashboard in DASHBOARDS.items():
        path = args.out / name
        text = render(dashboard)
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run: python -m generate.dashboards")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
