"""Attribution, prices and budgets from the chart's values: the flags, the prices file, and
a budgets group equal to what the Python renderer (`infermeter rules --budget`) makes."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness import yamls
from harness.helm import infermeter_container, one, pod_spec, render, template_error
from infermeter.prices import parse
from infermeter.rules import Params
from infermeter.rules.cost import budget_group
from infermeter.settings import load_settings

PRICES = {
    "currency": "EUR",
    "default": {"prompt": 0.5, "completion": 1.5},
    "models": {"llama-3.1-8b*": {"prompt": 0.05, "completion": 0.1}},
}
BUDGETS = {"search": 5000, "ads": 1200.5, "big": 1_000_000, "tiny": 0.01}


def values(tmp_path: Path, **extra: object) -> Path:
    data = {
        "prometheusRule": {"enabled": True, "budgets": BUDGETS, "budgetCurrency": "EUR"},
        "sidecar": {
            "attributes": {"team": "X-Team", "feature": "X-Feature"},
            "maxAttributeValues": 8,
            "stripAttributeHeaders": True,
            "prices": PRICES,
        },
        **extra,
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_budgets_group_equals_the_python_renderer(tmp_path: Path) -> None:
    rule = one(render(values(tmp_path), monitoring=True), "PrometheusRule")
    (group,) = [g for g in rule["spec"]["groups"] if g["name"] == "infermeter.budgets"]
    expected = budget_group(
        Params(budgets={k: float(v) for k, v in BUDGETS.items()}, currency="EUR")
    )
    assert group == expected
    assert len(group["rules"]) == 4


def test_flags_and_prices_file_reach_the_sidecar(tmp_path: Path) -> None:
    manifests = render(values(tmp_path), monitoring=True)
    spec = pod_spec(manifests)
    container = infermeter_container(spec)
    args = container["args"]
    assert "--attribute=team=X-Team" in args
    assert "--attribute=feature=X-Feature" in args
    assert "--max-attribute-values=8" in args
    assert "--strip-attribute-headers" in args
    assert "--prices=/etc/infermeter/prices/prices.yaml" in args
    mount = next(m for m in container["volumeMounts"] if m["name"] == "infermeter-prices")
    assert mount["mountPath"] == "/etc/infermeter/prices"
    volume = next(v for v in spec["volumes"] if v["name"] == "infermeter-prices")
    config_map = one(manifests, "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    book = parse(yamls.load(config_map["data"]["prices.yaml"]))
    assert book.currency == "EUR"
    assert book.price("llama-3.1-8b-instruct").completion == 0.1
    # what the chart passes is what `infermeter serve` accepts
    prices = tmp_path / "prices.yaml"
    prices.write_text(config_map["data"]["prices.yaml"])
    flags = [a for a in args if a.startswith(("--attribute", "--max-attribute"))]
    settings = load_settings(
        {
            "attribute": [a.split("=", 1)[1] for a in flags if a.startswith("--attribute=")],
            "prices": str(prices),
        },
        environ={},
    )
    assert settings.attribute == ("feature=x-feature", "team=x-team")


def test_defaults_render_no_cost_flags_and_an_empty_budgets_group() -> None:
    manifests = render(sets=("prometheusRule.enabled=true",), monitoring=True)
    args = infermeter_container(pod_spec(manifests))["args"]
    assert not [a for a in args if "attribute" in a or "prices" in a]
    assert not [m for m in manifests if m["kind"] == "ConfigMap"]
    rule = one(manifests, "PrometheusRule")
    assert {"name": "infermeter.budgets", "rules": []} in rule["spec"]["groups"]


def test_bad_values_are_refused() -> None:
    assert "invalid propertyName 'model'" in template_error("sidecar.attributes.model=X-Model")
    no_currency = template_error("sidecar.prices.default.prompt=1")
    assert "missing property 'currency'" in no_currency
    assert "/prometheusRule/budgets/team-a': minimum" in template_error(
        "prometheusRule.budgets.team-a=-5"
    )
