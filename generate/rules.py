"""`python -m generate.rules`: rewrite deploy/prometheus/tests/rules_test.yaml."""

from __future__ import annotations

from tests.rules.test_rules import RULES, render_month_to_date, render_test_budgets, render_tests

if __name__ == "__main__":
    (RULES / "tests" / "rules_test.yaml").write_text(render_tests())
    (RULES / "tests" / "budget-rules.yaml").write_text(render_test_budgets())
    for name, text in render_month_to_date().items():
        (RULES / "tests" / name).write_text(text)
