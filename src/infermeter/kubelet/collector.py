"""Scrape-time view of the kubelet poller: its health and the device-to-container list."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from infermeter import metrics as m
from infermeter.collectors import Status
from infermeter.kubelet.poller import PodResourcesPoller


class KubeletCollector:
    name = "kubelet"

    def __init__(self, poller: PodResourcesPoller) -> None:
        self._poller = poller

    def status(self) -> Status:
        """The last `List` call, not this scrape-time copy, is the work worth reporting."""
        return self._poller.status()

    def collect(self) -> Iterable[Metric]:
        info = m.GPU_POD_INFO.family()
        for uuid, holders in sorted(self._poller.attribution().holders.items()):
            for ref in holders:
                info.add_metric([uuid, ref.namespace, ref.pod, ref.container], 1.0)
        yield info
