"""`infermeter rules`: render the rules with your parameters (flags named after Params)."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from infermeter.rules.params import Params
from infermeter.rules.render import alert_rules, budget_rules, recording_rules

#: Params fields that are not a single scalar: given by their own flags below
COMPOUND = ("labels", "budgets", "attribution_labels")
HELP = {
    "cluster_label": "Label telling clusters apart where one Prometheus, Thanos or Mimir "
    "ruler sees several (kubernetes-mixin's clusterLabel), e.g. cluster: every grouping and "
    "join keeps it, so each cluster has its own baselines and alerts. Default: none.",
}


def _budget(text: str) -> tuple[str, float]:
    name, sep, amount = text.partition("=")
    try:
        value = float(amount)
    except ValueError:
        value = -1.0
    if not sep or not name.strip() or value < 0:
        raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT, e.g. team-a=5000, got {text!r}")
    return name.strip(), value


def label_name(text: str) -> str:
    if text and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", text):
        raise argparse.ArgumentTypeError(f"not a Prometheus label name: {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Directory for recording-rules.yaml, alert-rules.yaml and budget-rules.yaml; "
        "default: print them.",
    )
    parser.add_argument(
        "--budget",
        type=_budget,
        action="append",
        default=[],
        metavar="NAME=AMOUNT",
        help="Monthly budget of one --budget-label value, in --currency (repeatable).",
    )
    parser.add_argument(
        "--attribution-labels",
        type=lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
        default=Params().attribution_labels,
        metavar="LABEL,...",
        help="Labels spend is recorded by (the serve --attribute names), besides model. "
        f"Default: {','.join(Params().attribution_labels)}.",
    )
    for field in dataclasses.fields(Params):
        if field.name in COMPOUND:
            continue
        default = field.default
        kind = type(default)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=label_name if field.name == "cluster_label" else kind,
            default=default,
            metavar=kind.__name__.upper(),
            help=HELP.get(field.name, f"Default: {default}."),
        )


def run(args: argparse.Namespace) -> int:
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(Params) if f.name not in COMPOUND
    }
    params = Params(**values, budgets=dict(args.budget), attribution_labels=args.attribution_labels)
    outputs = {
        "recording-rules.yaml": recording_rules(params),
        "alert-rules.yaml": alert_rules(params),
        "budget-rules.yaml": budget_rules(params),
    }
    if args.out is None:
        print("\n---\n".join(outputs.values()), end="")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        (args.out / name).write_text(text)
    return 0
