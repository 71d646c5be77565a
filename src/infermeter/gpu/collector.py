"""Scrape-time view of the GPU poller: fresh metric families from the latest snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import Metric

from infermeter import metrics as m
from infermeter.collectors import Status
from infermeter.gpu import dcgm
from infermeter.gpu.poller import GpuPoller
from infermeter.kubelet.attribution import Attribution


class GpuCollector:
    name = "gpu"

    def __init__(
        self,
        poller: GpuPoller,
        dcgm_compat: bool = False,
        pods: Callable[[], Attribution] | None = None,
    ) -> None:
        self._poller = poller
        self._dcgm_host = dcgm.hostname() if dcgm_compat else None
        self._pods = pods
        # With pod attribution every GPU series carries namespace/pod/container (empty for
        # a device no single container holds, which Prometheus reads as absent).
        self._extra = m.POD_LABELS if pods is not None else ()

    def status(self) -> Status:
        """The poll, not this scrape-time copy, is the work worth reporting."""
        snap = self._poller.snapshot()
        return Status(ok=snap.poll_ok, seconds=snap.poll_seconds)

    def collect(self) -> Iterable[Metric]:
        snap = self._poller.snapshot()
        nvml_up = m.NVML_UP.family()
        nvml_up.add_metric([], 1.0 if snap.nvml_up else 0.0)
        yield nvml_up

        attribution = self._pods() if self._pods is not None else Attribution()

        def pod_labels(uuid: str) -> list[str]:
            if not self._extra:
                return []
            ref = attribution.sole(uuid)
            return [ref.namespace, ref.pod, ref.container] if ref else ["", "", ""]

        info, up = m.GPU_INFO.family(self._extra), m.GPU_UP.family(self._extra)
        families: dict[str, m.Family] = {}
        for sample in sorted(
            snap.devices,
            key=lambda s: (s.identity.index, s.identity.parent_uuid, s.identity.uuid),
        ):
            ident = sample.identity
            pod = pod_labels(ident.uuid)
            if ident.uuid:
                info.add_metric(
                    [
                        *ident.labels,
                        ident.name,
                        snap.driver_version,
                        ident.pci_bus_id,
                        ident.parent_uuid,
                        *pod,
                    ],
                    1.0,
                )
            up.add_metric([*ident.labels, *pod], 1.0 if sample.up else 0.0)
            for reading in sample.readings:
                family = families.get(reading.spec.name)
                if family is None:
                    family = families[reading.spec.name] = reading.spec.family(self._extra)
                family.add_metric([*ident.labels, *reading.extra, *pod], reading.value)
        yield info
        yield up
        yield from (families[name] for name in sorted(families))

        xids = m.GPU_XID_ERRORS.family(self._extra)
        for (gpu, uuid, xid), count in sorted(self._poller.xid_counts.copy().items()):
            xids.add_metric([gpu, uuid, xid, *pod_labels(uuid)], float(count))
        yield xids
        if self._dcgm_host is not None:
            sole = {uuid: ref for uuid in attribution.holders if (ref := attribution.sole(uuid))}
            yield from dcgm.families(snap, self._poller.xid_counts.last(), self._dcgm_host, sole)
