"""README reference tables generated from the code, so the docs cannot drift from it.

`make generate` rewrites the marked sections of README.md in place; `make generate-check`
(and tests/test_generated.py) fails when the README differs from what this module generates.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from infermeter.metrics import CATALOGUE
from infermeter.settings import CONFIG_ENV, Settings, env_name, flag_name


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def settings_table() -> str:
    rows = [
        "| flag | environment | YAML key | default | meaning |",
        "|---|---|---|---|---|",
        f"| `--config FILE` | `{CONFIG_ENV}` | | | YAML file of settings. |",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if isinstance(default, tuple):
            default = ",".join(default) or str(extra.get("empty", "(all)"))
        elif default is None:
            default = "(unset)"
        elif isinstance(default, bool):
            default = str(default).lower()
        flag = flag_name(name) + (
            "` / `--no-" + name.replace("_", "-") if field.annotation is bool else ""
        )
        rows.append(
            f"| `{flag}` | `{env_name(name)}` | `{name}` | `{_cell(default)}` "
            f"| {_cell(field.description)} |"
        )
    return "\n".join(rows) + "\n"


def metrics_table() -> str:
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for spec in sorted(CATALOGUE, key=lambda s: (s.group != "self", s.group, s.name)):
        labels = ", ".join(f"`{label}`" for label in spec.labels)
        rows.append(f"| `{spec.name}` | {spec.kind} | {labels} | {_cell(spec.help)} |")
    return "\n".join(rows) + "\n"


SECTIONS = {"settings": settings_table, "metrics": metrics_table}


def _replacement(body: str) -> Callable[[re.Match[str]], str]:
    return lambda match: match.group(1) + body + match.group(2)


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {name} -->\n).*?(<!-- END GENERATED: {name} -->)", re.S
        )
        if not pattern.search(text):
            raise ValueError(f"README has no generated section {name!r}")
        text = pattern.sub(_replacement(make()), text)
    return text
