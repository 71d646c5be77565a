"""The rules: promtool-clean, unit-tested by promtool, and built only on metrics infermeter
really exports (tests/test_generated.py keeps the rendered files in sync with their source)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from generate.promtool_spend import BUDGETS
from generate.rules import render_latency_tests, render_tests
from harness import yamls
from infermeter.rules import Params, alert_rules, budget_rules, recording_rules

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool comes with Debian's prometheus package (make test installs it)"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_promtool_check_rules() -> None:
    result = promtool(
        "check", "rules", "recording-rules.yaml", "alert-rules.yaml", "budget-rules.yaml"
    )
    assert result.returncode == 0, result.stdout + result.stderr


#: Every promtool test file, one pytest test each (xdist runs them side by side).
PROMTOOL_TESTS = ("latency_test.yaml", "rules_test.yaml", "month_to_date_test.yaml")


def test_every_promtool_test_file_is_run() -> None:
    assert sorted(PROMTOOL_TESTS) == sorted(p.name for p in (RULES / "tests").glob("*_test.yaml"))


@pytest.mark.timeout(300)  # a day of latency history, evaluated every 5 minutes
@pytest.mark.parametrize("test_file", PROMTOOL_TESTS)
def test_promtool_unit_tests(test_file: str) -> None:
    result = promtool("test", "rules", test_file, cwd=RULES / "tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 1


def test_every_alert_has_severity_annotations_and_a_runbook_section() -> None:
    runbook = (RULES / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("## ")
    }
    alerts = [r for g in yamls.load(alert_rules())["groups"] for r in g["rules"]]
    tested = {
        t["alertname"]
        for text in (render_tests(), render_latency_tests())
        for group in yamls.load(text)["tests"]
        for t in group["alert_rule_test"]
        if t["exp_alerts"]
    }
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"]), name
        assert alert["annotations"]["runbook_url"].endswith("#" + name.lower()), name
        assert name.lower() in anchors, f"runbook.md has no section for {name}"
        assert name in tested, f"no promtool test fires {name}"


def exported_names() -> set[str]:
    """Every sample name the golden /metrics files declare."""
    names = {"up"}  # Prometheus' own, per target
    for golden in (ROOT / "tests" / "fixtures" / "golden").glob("*.prom"):
        for line in golden.read_text().splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                names.add(name)
                if kind == "histogram":
                    names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_rules_use_only_exported_metrics() -> None:
    known = exported_names()
    recorded = set()
    used = set()
    for text in (recording_rules(), alert_rules(), budget_rules(Params(budgets=BUDGETS))):
        for group in yamls.load(text)["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    recorded.add(rule["record"])
                used |= set(
                    re.findall(r"\b(infermeter_[a-z_]+|up)\b(?=\s*[{\[)]|\s*$|\s)", rule["expr"])
                )
    missing = {name for name in used if name not in known and not any(name in r for r in recorded)}
    assert not missing, f"rules use metrics infermeter does not export: {sorted(missing)}"
