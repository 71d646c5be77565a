"""Grafana dashboards as code: `python -m generate.dashboards` writes dashboards/*.json.

The JSON is checked in (Grafana imports it as it is, the Helm chart ships it as ConfigMaps);
a test fails when it differs from what this package generates.
"""

from generate.dashboards.builder import Dashboard, Panel, Row, Target, render
from generate.dashboards.catalogue import DASHBOARDS

__all__ = ["DASHBOARDS", "Dashboard", "Panel", "Row", "Target", "render"]
