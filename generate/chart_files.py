"""The Helm chart's copies of the rules and dashboards (deploy/helm/infermeter/files/).

Helm's `.Files` cannot read outside the chart directory, so the chart carries copies of the
one rules source (deploy/prometheus/*.yaml, rendered from src/infermeter/rules) and of
dashboards/*.json. `make generate` writes them with everything else; `make generate-check`
(and tests/test_generated.py) fails when a copy differs from its source.
"""

from __future__ import annotations

from collections.abc import Mapping

CHART_DIR = "deploy/helm/infermeter"
RULE_FILES = ("recording-rules.yaml", "alert-rules.yaml")
#: the chart folders that hold nothing but generated copies
OWNED = (f"{CHART_DIR}/files/rules/*", f"{CHART_DIR}/files/dashboards/*")


def files(sources: Mapping[str, str]) -> dict[str, str]:
    """The chart's copies (path from the repository root) of the generated `sources`."""
    out = {
        f"{CHART_DIR}/files/rules/{name}": sources[f"deploy/prometheus/{name}"]
        for name in RULE_FILES
    }
    for path in sorted(sources):
        folder, _, name = path.rpartition("/")
        if folder == "dashboards" and name.endswith(".json"):
            out[f"{CHART_DIR}/files/dashboards/{name}"] = sources[path]
    return out
