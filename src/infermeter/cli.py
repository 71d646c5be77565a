"""Command line: `infermeter serve`, `infermeter version`. The only place that sets up logging."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from infermeter import __version__
from infermeter.settings import (
    CONFIG_ENV,
    Settings,
    SettingsError,
    env_name,
    flag_name,
    load_settings,
)


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"YAML file of settings (keys as below, snake_case). Env: {CONFIG_ENV}.",
    )
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = f"{field.description} Default: {shown}. Env: {env_name(name)}."
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("repeatable"):
            parser.add_argument(
                flag_name(name),
                action="append",
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=help_text,
            )
        elif field.annotation is bool:
            parser.add_argument(
                flag_name(name),
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag_name(name),
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=help_text,
            )


def build_parser(for_serve: bool = False) -> argparse.ArgumentParser:
    """`for_serve`: leave the other commands' arguments out. Building them imports the
    demo upstream (aiohttp) and the rules renderer: ~12 MB the supervisor would carry."""
    parser = argparse.ArgumentParser(
        prog="infermeter",
        description="Prometheus exporter and observability sidecar for LLM inference.",
    )
    parser.add_argument("--version", action="version", version=f"infermeter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the exporter (and, with --upstream, the proxy)")
    _add_setting_flags(serve)
    demo = commands.add_parser(
        "demo-upstream",
        help="run a simulated OpenAI-compatible inference server (for wiring checks and tests)",
    )
    rules = commands.add_parser(
        "rules", help="render the Prometheus recording and alert rules with your parameters"
    )
    if not for_serve:
        from infermeter.demo.upstream import add_arguments
        from infermeter.rules.cli import add_arguments as add_rules_arguments

        add_arguments(demo)
        add_rules_arguments(rules)
    commands.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in words if not word.startswith("-")), None)
    args = vars(build_parser(for_serve=command == "serve").parse_args(words))
    command = args.pop("command")
    if command == "version":
        print(f"infermeter {__version__}")
        return 0
    if command == "rules":
        from infermeter.rules.cli import run as render_rules

        return render_rules(argparse.Namespace(**args))
    if command == "demo-upstream":
        from infermeter import logs
        from infermeter.demo.upstream import run

        logs.configure("plain", "info")
        return run(argparse.Namespace(**args))
    config_path: Any = args.pop("config", None)
    try:
        settings = load_settings(args, config_path=config_path)
    except SettingsError as exc:
        print(f"infermeter: {exc}", file=sys.stderr)
        return 2

    from infermeter import app, logs  # imported late: `--help` stays fast
    from infermeter.net import StartupError

    logs.configure(settings.log_format, settings.log_level)
    try:
        return app.run(settings)
    except StartupError as exc:
        print(f"infermeter: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
