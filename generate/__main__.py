"""`python -m generate` (`make generate`): rewrite every generated file of the repository.

`python -m generate --check` (`make generate-check`) writes nothing and exits 1 naming each
file that differs from what the generators produce.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generate.files import REGENERATE, ROOT, stale, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Name stale files; write nothing.")
    parser.add_argument("--root", type=Path, default=ROOT, help="Repository root: %(default)s")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.root)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print(f"{len(problems)} generated file(s) out of date: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    for line in write(args.root):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
