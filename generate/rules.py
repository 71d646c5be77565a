"""deploy/prometheus: the rules rendered with the default parameters (what `infermeter rules`
writes), and the promtool unit tests of them (`promtool test rules`), built as data in
generate/promtool_tests.py and generate/promtool_spend.py.
"""

from __future__ import annotations

import yaml

from generate.promtool_spend import BUDGETS, month_rule_groups, month_to_date_test_file
from generate.promtool_tests import build_latency_test_file, build_test_file
from infermeter.rules import Params, alert_rules, budget_rules, recording_rules

RULES_DIR = "deploy/prometheus"
HEADER = "# Rendered by generate/promtool_tests.py (make generate); do not edit by hand.\n"
MONTH_RULES = "month-to-date-rules.yaml"


def render_test_budgets() -> str:
    """The budgets the promtool tests assume (the shipped budget-rules.yaml has none)."""
    return budget_rules(Params(budgets=BUDGETS))


TEST_RULE_FILES = ["../recording-rules.yaml", "../alert-rules.yaml", "budget-rules.yaml"]


def render_tests() -> str:
    return HEADER + yaml.safe_dump(
        build_test_file(TEST_RULE_FILES), sort_keys=False, width=1000, allow_unicode=True
    )


def render_latency_tests() -> str:
    """The latency scenario's test file (its own evaluation interval)."""
    return HEADER + yaml.safe_dump(
        build_latency_test_file(TEST_RULE_FILES), sort_keys=False, width=1000, allow_unicode=True
    )


def render_month_to_date() -> dict[str, str]:
    """The month-to-date chain's own promtool test: its rules (hourly) and test file."""
    return {
        MONTH_RULES: yaml.safe_dump({"groups": month_rule_groups()}, sort_keys=False, width=1000),
        "month_to_date_test.yaml": HEADER
        + yaml.safe_dump(month_to_date_test_file(MONTH_RULES), sort_keys=False, width=1000),
    }


def files() -> dict[str, str]:
    """Every file this generates (path from the repository root) and its text."""
    out = {
        f"{RULES_DIR}/recording-rules.yaml": recording_rules(),
        f"{RULES_DIR}/alert-rules.yaml": alert_rules(),
        f"{RULES_DIR}/budget-rules.yaml": budget_rules(),
        f"{RULES_DIR}/tests/rules_test.yaml": render_tests(),
        f"{RULES_DIR}/tests/latency_test.yaml": render_latency_tests(),
        f"{RULES_DIR}/tests/budget-rules.yaml": render_test_budgets(),
    }
    for name, text in render_month_to_date().items():
        out[f"{RULES_DIR}/tests/{name}"] = text
    return out
