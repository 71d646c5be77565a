"""`infermeter rules`: render the rules with your parameters (flags named after Params)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from infermeter.rules.params import Params
from infermeter.rules.render import alert_rules, recording_rules


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Directory for recording-rules.yaml and alert-rules.yaml; default: print both.",
    )
    for field in dataclasses.fields(Params):
        if field.name == "labels":
            continue
        default = field.default
        kind = type(default)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=kind,
            default=default,
            metavar=kind.__name__.upper(),
            help=f"Default: {default}.",
        )


def run(args: argparse.Namespace) -> int:
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(Params) if f.name != "labels"
    }
    params = Params(**values)
    outputs = {
        "recording-rules.yaml": recording_rules(params),
        "alert-rules.yaml": alert_rules(params),
    }
    if args.out is None:
        print("\n---\n".join(outputs.values()), end="")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        (args.out / name).write_text(text)
    return 0
