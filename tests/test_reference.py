"""The metric catalogue the README's reference tables are generated from (the tables
themselves are kept current by tests/test_generated.py)."""

from __future__ import annotations

from pathlib import Path

from infermeter import metrics as m

ROOT = Path(__file__).parents[1]


def test_catalogue_follows_prometheus_naming() -> None:
    names = [spec.name for spec in m.CATALOGUE]
    assert len(names) == len(set(names))
    for spec in m.CATALOGUE:
        assert spec.name.startswith("infermeter_")
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert spec.help.endswith("."), spec.name
        if spec.group == "gpu" and spec.name not in ("infermeter_nvml_up",):
            assert spec.labels[:2] == ("gpu", "uuid"), spec.name


def test_golden_metrics_are_all_in_the_catalogue() -> None:
    exported = {
        line.split()[2]
        for golden in (ROOT / "tests/fixtures/golden").glob("*.prom")
        for line in golden.read_text().splitlines()
        if line.startswith("# TYPE infermeter_")
    }
    declared = {spec.name for spec in m.CATALOGUE}  # the text format TYPEs counters as *_total
    assert exported <= declared
