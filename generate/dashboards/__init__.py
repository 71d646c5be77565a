"""Grafana dashboards as code: `make generate` writes dashboards/*.json from DASHBOARDS.

The JSON is checked in (Grafana imports it as it is, the Helm chart ships it as ConfigMaps);
`make generate-check` (and tests/test_generated.py) fails when it differs from what this
package generates.
"""

from generate.dashboards.builder import Dashboard, Panel, Row, Target, render
from generate.dashboards.catalogue import DASHBOARDS

__all__ = ["DASHBOARDS", "Dashboard", "Panel", "Row", "Target", "render"]
