"""Values that cross from the NVML threads to the scrape thread: immutable snapshots."""

from __future__ import annotations

from dataclasses import dataclass

from infermeter.metrics import MetricSpec


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    index: int
    uuid: str
    name: str = ""
    pci_bus_id: str = ""
    parent_uuid: str = ""
    gpu_instance_id: str = ""  # MIG only
    mig_profile: str = ""  # MIG only, e.g. "1g.10gb"

    @property
    def labels(self) -> tuple[str, str]:
        return (str(self.index), self.uuid)


@dataclass(frozen=True, slots=True)
class PodRef:
    """The container that holds a device, from the kubelet's pod-resources API."""

    namespace: str
    pod: str
    container: str


@dataclass(frozen=True, slots=True)
class Reading:
    spec: MetricSpec
    value: float
    extra: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceSample:
    identity: DeviceIdentity
    up: bool
    readings: tuple[Reading, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one scrape reports; replaced whole after every poll, never mutated."""

    nvml_up: bool = False
    driver_version: str = ""
    devices: tuple[DeviceSample, ...] = ()
    poll_seconds: float | None = None
    poll_ok: bool = False
