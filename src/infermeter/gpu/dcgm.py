"""dcgm-exporter's default counters under their own names, units and labels (`--dcgm-compat`).

For SREs whose dashboards and alerts are written against dcgm-exporter. Pure: it maps a GPU
snapshot (already read by the poller) to extra metric families; it never calls NVML.

Two deliberate differences, both documented in the README: dcgm-exporter's counters
(energy, PCIe replays, ECC, remapped rows) are exposed untyped, because a counter without a
`_total` suffix cannot be written in OpenMetrics (and prometheus_client always appends it);
PromQL treats the series exactly the same. `DCGM_FI_DEV_XID_ERRORS` is, as in
dcgm-exporter, the last XID seen (0 for none), not a count.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client.metrics_core import GaugeMetricFamily, Metric, UnknownMetricFamily

from infermeter import metrics as m
from infermeter.gpu.model import DeviceIdentity, DeviceSample, PodRef, Snapshot

MiB = 1024.0**2
LABELS = (
    "gpu",
    "UUID",
    "device",
    "modelName",
    "Hostname",
    "pci_bus_id",
    "DCGM_FI_DRIVER_VERSION",
    "GPU_I_ID",
    "GPU_I_PROFILE",
    "namespace",
    "pod",
    "container",
)


@dataclass(frozen=True, slots=True)
class Field:
    """One dcgm-exporter field, read from one infermeter reading scaled to DCGM's unit."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    source: m.MetricSpec
    scale: float = 1.0
    extra: tuple[str, ...] = ()  # the reading's extra label values (clock domain, ECC type)
    integral: bool = True  # DCGM reports whole units; rounding undoes float scaling noise

    def value(self, reading: float) -> float:
        scaled = reading * self.scale
        return float(round(scaled)) if self.integral else scaled


FIELDS: tuple[Field, ...] = (
    Field("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", m.GPU_CLOCK, 1e-6,
          ("sm",)),
    Field("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", m.GPU_CLOCK,
          1e-6, ("memory",)),
    Field("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).",
          m.GPU_MEMORY_TEMPERATURE),
    Field("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", m.GPU_TEMPERATURE),
    Field("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", m.GPU_POWER,
          integral=False),
    Field("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
          "Total energy consumption since boot (in mJ).", m.GPU_ENERGY, 1e3),
    Field("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.",
          m.GPU_PCIE_REPLAYS),
    Field("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", m.GPU_UTILIZATION, 100.0),
    Field("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).",
          m.GPU_MEMORY_UTILIZATION, 100.0),
    Field("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).",
          m.GPU_MEMORY_FREE, 1 / MiB),
    Field("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).",
          m.GPU_MEMORY_USED, 1 / MiB),
    Field("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).",
          m.GPU_MEMORY_RESERVED, 1 / MiB),
    Field("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter",
          "Total number of single-bit volatile ECC errors.", m.GPU_ECC_ERRORS, 1.0,
          ("corrected",)),
    Field("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter",
          "Total number of double-bit volatile ECC errors.", m.GPU_ECC_ERRORS, 1.0,
          ("uncorrected",)),
    Field("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter",
          "Number of remapped rows for uncorrectable errors", m.GPU_REMAPPED_ROWS, 1.0,
          ("uncorrectable",)),
    Field("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter",
          "Number of remapped rows for correctable errors", m.GPU_REMAPPED_ROWS, 1.0,
          ("correctable",)),
    Field("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed",
          m.GPU_ROW_REMAP_FAILED),
    Field("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge",
          "Ratio of time the graphics engine is active.", m.GPU_GRAPHICS_ACTIVE,
          integral=False),
    Field("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge",
          "Ratio of cycles the tensor (HMMA) pipe is active.", m.GPU_TENSOR_ACTIVE,
          integral=False),
)  # fmt: skip
XID_ERRORS = Field(
    "DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", m.GPU_XID_ERRORS
)
_BY_SOURCE: dict[tuple[str, tuple[str, ...]], Field] = {(f.source.name, f.extra): f for f in FIELDS}


def hostname() -> str:
    """dcgm-exporter's `Hostname`: the node name Kubernetes gives (NODE_NAME), else the host's."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


def labels(ident: DeviceIdentity, host: str, driver: str, pod: PodRef | None) -> tuple[str, ...]:
    """dcgm-exporter labels a MIG device by its parent GPU's UUID plus GPU_I_ID/GPU_I_PROFILE.

    An empty value is an absent label to Prometheus, so a full GPU has no GPU_I_* and a GPU
    no pod holds has no pod labels.
    """
    return (
        str(ident.index),
        ident.parent_uuid or ident.uuid,
        f"nvidia{ident.index}",
        ident.name,
        host,
        ident.pci_bus_id,
        driver,
        ident.gpu_instance_id if ident.parent_uuid else "",
        ident.mig_profile if ident.parent_uuid else "",
        *((pod.namespace, pod.pod, pod.container) if pod else ("", "", "")),
    )


def _family(field: Field) -> Metric:
    if field.kind == "gauge":
        return GaugeMetricFamily(field.name, field.help, labels=LABELS)
    return UnknownMetricFamily(field.name, field.help, labels=LABELS)


def families(
    snap: Snapshot,
    last_xid: dict[str, int],
    host: str,
    pods: dict[str, PodRef] | None = None,
) -> Iterator[Metric]:
    """The DCGM families for a snapshot; `last_xid` by GPU UUID, `pods` by device UUID."""
    out: dict[str, Metric] = {}

    def add(field: Field, sample: DeviceSample, value: float) -> None:
        family = out.get(field.name)
        if family is None:
            family = out[field.name] = _family(field)
        pod = (pods or {}).get(sample.identity.uuid)
        values = labels(sample.identity, host, snap.driver_version, pod)
        family.add_metric(values, value)  # type: ignore[attr-defined]

    for sample in _ordered(snap.devices):
        if not sample.up:
            continue
        for reading in sample.readings:
            field = _BY_SOURCE.get((reading.spec.name, reading.extra))
            if field is not None:
                add(field, sample, field.value(reading.value))
        if not sample.identity.parent_uuid:
            add(XID_ERRORS, sample, float(last_xid.get(sample.identity.uuid, 0)))
    yield from (out[name] for name in sorted(out))


def _ordered(samples: Iterable[DeviceSample]) -> list[DeviceSample]:
    return sorted(
        samples, key=lambda s: (s.identity.index, s.identity.parent_uuid, s.identity.uuid)
    )
