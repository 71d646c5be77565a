"""Copy the rules and dashboards into the Helm chart (`python -m generate.chart_files`).

Helm's `.Files` cannot read outside the chart directory, so the chart carries copies of the
one rules source (deploy/prometheus/*.yaml, rendered from src/infermeter/rules) and of
dashboards/*.json. This writes them; `--check` only reports drift, and a test fails on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "infermeter"
RULE_FILES = ("recording-rules.yaml", "alert-rules.yaml")


def wanted() -> dict[Path, bytes]:
    """Every generated chart file (path inside the chart) and the bytes it must hold."""
    files = {
        Path("files/rules") / name: (ROOT / "deploy" / "prometheus" / name).read_bytes()
        for name in RULE_FILES
    }
    for dashboard in sorted((ROOT / "dashboards").glob("*.json")):
        files[Path("files/dashboards") / dashboard.name] = dashboard.read_bytes()
    return files


def present() -> dict[Path, bytes]:
    """The generated files the chart holds now (all of files/rules and files/dashboards)."""
    out = {}
    for folder in ("files/rules", "files/dashboards"):
        for path in sorted((CHART / folder).glob("*")):
            if path.is_file():
                out[path.relative_to(CHART)] = path.read_bytes()
    return out


def drift() -> list[str]:
    """What differs between the chart's copies and their sources, one line each."""
    want, have = wanted(), present()
    lines = [f"missing {p}" for p in sorted(want.keys() - have.keys())]
    lines += [f"stale {p}" for p in sorted(have.keys() - want.keys())]
    lines += [f"differs {p}" for p in sorted(want.keys() & have.keys()) if want[p] != have[p]]
    return lines


def write() -> None:
    want = wanted()
    for path in present().keys() - want.keys():
        (CHART / path).unlink()
    for path, data in want.items():
        (CHART / path).parent.mkdir(parents=True, exist_ok=True)
        (CHART / path).write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift()
        for line in problems:
            print(f"{CHART}: {line}", file=sys.stderr)
        return 1 if problems else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
