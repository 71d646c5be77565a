"""Prometheus recording and alerting rules: the one source, with parameters.

`deploy/prometheus/*.yaml` are rendered from here with the defaults, the Helm chart's
PrometheusRule from the same files, and `infermeter rules` renders them with your own
parameters (windows, multiplier, guards, thresholds, GPU price).
"""

from infermeter.rules.params import Params
from infermeter.rules.render import alert_rules, budget_rules, recording_rules

__all__ = ["Params", "alert_rules", "budget_rules", "recording_rules"]
