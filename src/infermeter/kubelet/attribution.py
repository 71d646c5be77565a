"""Which container holds which GPU or MIG device, from the kubelet's pod list. Pure.

The NVIDIA device plugin reports device ids as GPU UUIDs (`nvidia.com/gpu`) and MIG UUIDs
(`nvidia.com/mig-<profile>`); with time slicing (or MPS) each replica is `<UUID>::<n>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from infermeter.gpu.model import PodRef
from infermeter.kubelet.wire import Pod

RESOURCE_PREFIX = "nvidia.com/"


@dataclass(frozen=True, slots=True)
class Attribution:
    """Holders by device UUID (GPU-... or MIG-...), in a stable order."""

    holders: Mapping[str, tuple[PodRef, ...]] = field(default_factory=dict)

    def sole(self, uuid: str) -> PodRef | None:
        """The one container holding the device; None when none or several share it.

        A value read from a shared GPU (time slicing) is the whole GPU's, not any one pod's
        share, so it is not attributed to one of them; `infermeter_gpu_pod_info` lists them.
        """
        holders = self.holders.get(uuid, ())
        return holders[0] if len(holders) == 1 else None


def device_uuid(device_id: str) -> str:
    """`GPU-…::3` (a time-slicing replica) -> `GPU-…`."""
    return device_id.split("::", 1)[0]


def attribute(pods: Iterable[Pod]) -> Attribution:
    found: dict[str, set[PodRef]] = {}
    for pod in pods:
        for container in pod.containers:
            for devices in container.devices:
                if not devices.resource_name.startswith(RESOURCE_PREFIX):
                    continue
                for device_id in devices.device_ids:
                    ref = PodRef(pod.namespace, pod.name, container.name)
                    found.setdefault(device_uuid(device_id), set()).add(ref)
    return Attribution({uuid: tuple(sorted(refs, key=_order)) for uuid, refs in found.items()})


def _order(ref: PodRef) -> tuple[str, str, str]:
    return (ref.namespace, ref.pod, ref.container)
