"""The NVML poller's states through the injected `NvmlApi` seam (in-process, no thread).

The C fake (`tests/fake_nvml/`) exercises the real nvidia-ml-py bindings end to end; this
drives the poller's state machine round by round with `GpuPoller.step()` and a Python
`NvmlApi`, raising the real `pynvml.NVMLError` codes so that the classification is the
sidecar's own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pynvml
import pytest

from infermeter import metrics as m
from infermeter.gpu.api import Handle, NvmlApi, Probe
from infermeter.gpu.model import DeviceIdentity, Reading, Snapshot
from infermeter.gpu.poller import MAX_BACKOFF, GpuPoller


def error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


@dataclass
class FakeGpu:
    uuid: str
    utilization: float = 50.0
    lost: bool = False  # every call on its handle: GPU_IS_LOST
    unsupported: set[str] = field(default_factory=set)  # probe names: NOT_SUPPORTED
    migs: list[str] = field(default_factory=list)


class FakeNvml:
    """A driver whose state a test changes between rounds."""

    def __init__(self, *gpus: FakeGpu) -> None:
        self.gpus = list(gpus)
        self.init_error: int | None = None  # nvmlInit fails with this code
        self.down_mid_run = False  # every device call: UNINITIALIZED (driver unloaded)
        self.calls: list[str] = []
        self.inits = self.shutdowns = 0
        self.probe_reads: dict[str, int] = {}
        self._handles = itertools.count(1)

    def _gpu(self, handle: Handle) -> FakeGpu:
        if self.down_mid_run:
            raise error(pynvml.NVML_ERROR_UNINITIALIZED)
        gpu: FakeGpu = handle[1]
        if gpu.lost:
            raise error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def init(self) -> None:
        self.inits += 1
        if self.init_error is not None:
            raise error(self.init_error)

    def shutdown(self) -> None:
        self.shutdowns += 1

    def driver_version(self) -> str:
        return "999.1"

    def device_count(self) -> int:
        if self.down_mid_run:
            raise error(pynvml.NVML_ERROR_UNINITIALIZED)
        return len(self.gpus)

    def handle_by_index(self, index: int) -> Handle:
        gpu = self.gpus[index]
        if gpu.lost:
            raise error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return (next(self._handles), gpu)

    def handle_key(self, handle: Handle) -> int:
        return int(handle[0])

    def gpu_identity(self, index: int, handle: Handle) -> DeviceIdentity:
        return DeviceIdentity(index, self._gpu(handle).uuid, "Fake GPU")

    def mig_handles(self, handle: Handle) -> Iterator[Handle]:
        for uuid in self._gpu(handle).migs:
            yield (next(self._handles), FakeGpu(uuid))

    def mig_identity(self, parent: DeviceIdentity, handle: Handle) -> DeviceIdentity:
        return DeviceIdentity(parent.index, handle[1].uuid, parent_uuid=parent.uuid)

    def uuid_of(self, handle: Handle) -> str:
        return self._gpu(handle).uuid

    def make_probes(self) -> list[Probe]:
        def utilization(handle: Handle) -> list[Reading]:
            gpu = self._gpu(handle)
            self.probe_reads["utilization"] = self.probe_reads.get("utilization", 0) + 1
            if "utilization" in gpu.unsupported:
                raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return [Reading(m.GPU_UTILIZATION, gpu.utilization / 100)]

        def power(handle: Handle) -> list[Reading]:
            gpu = self._gpu(handle)
            self.probe_reads["power"] = self.probe_reads.get("power", 0) + 1
            if "power" in gpu.unsupported:
                raise error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
            return [Reading(m.GPU_POWER, 300.0)]

        return [utilization, power]

    def close_probes(self, probes: list[Probe]) -> None:
        self.calls.append(f"close {len(probes)}")

    def event_set_create(self) -> Any:
        raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)  # no XID watcher thread here

    def register_xid_events(self, handle: Handle, event_set: Any) -> None:
        raise AssertionError("not reached: the event set is unsupported")

    def wait_event(self, event_set: Any, timeout_ms: int) -> tuple[int, int] | None:
        raise AssertionError("not reached")

    def event_set_free(self, event_set: Any) -> None:
        raise AssertionError("not reached")


def poller(api: FakeNvml, selection: tuple[str, ...] = ()) -> GpuPoller:
    checked: NvmlApi = api  # typed as the Protocol the sidecar runs against
    return GpuPoller(1.0, selection, api=checked)


def ups(snap: Snapshot) -> dict[str, bool]:
    return {d.identity.uuid: d.up for d in snap.devices}


def figures(snap: Snapshot, uuid: str) -> dict[str, float]:
    device = next(d for d in snap.devices if d.identity.uuid == uuid)
    return {r.spec.name: r.value for r in device.readings}


def test_healthy_round() -> None:
    api = FakeNvml(FakeGpu("GPU-a"), FakeGpu("GPU-b", utilization=20))
    p = poller(api)
    assert not p.first_poll_done
    assert p.step() == 1.0
    snap = p.snapshot()
    assert (snap.nvml_up, snap.poll_ok, snap.driver_version) == (True, True, "999.1")
    assert ups(snap) == {"GPU-a": True, "GPU-b": True}
    assert figures(snap, "GPU-b")[m.GPU_UTILIZATION.name] == 0.2
    assert p.first_poll_done


def test_nvml_missing_backs_off_doubling_then_comes_up() -> None:
    api = FakeNvml(FakeGpu("GPU-a"))
    api.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    p = poller(api)
    waits = [p.step() for _ in range(8)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, MAX_BACKOFF, MAX_BACKOFF]
    snap = p.snapshot()
    assert (snap.nvml_up, snap.poll_ok, snap.devices) == (False, False, ())
    assert p.first_poll_done  # readiness does not wait for a GPU that is not there
    api.init_error = None
    assert p.step() == 1.0  # back at the poll interval
    assert ups(p.snapshot()) == {"GPU-a": True}
    api.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    api.down_mid_run = True
    assert p.step() == 0.0  # torn down, re-initialise at once
    assert p.step() == 1.0  # and the backoff starts over from the interval


def test_gpu_lost_and_back_while_the_others_keep_reporting() -> None:
    a, b = FakeGpu("GPU-a"), FakeGpu("GPU-b")
    api = FakeNvml(a, b)
    p = poller(api)
    p.step()
    a.lost = True
    p.step()
    snap = p.snapshot()
    assert ups(snap) == {"GPU-a": False, "GPU-b": True}
    assert figures(snap, "GPU-a") == {}  # a lost GPU reports no stale figures
    assert (snap.nvml_up, snap.poll_ok) == (True, True)
    a.lost = False
    p.step()
    assert ups(p.snapshot()) == {"GPU-a": True, "GPU-b": True}


def test_gpu_lost_at_start_is_listed_down_and_picked_up_later() -> None:
    a = FakeGpu("GPU-a", lost=True)
    api = FakeNvml(a, FakeGpu("GPU-b"))
    p = poller(api)
    p.step()
    snap = p.snapshot()
    assert [(d.identity.index, d.identity.uuid, d.up) for d in snap.devices] == [
        (1, "GPU-b", True),
        (0, "", False),  # no identity yet: listed by index
    ]
    a.lost = False
    p.step()
    assert ups(p.snapshot()) == {"GPU-a": True, "GPU-b": True}


def test_an_unsupported_field_is_dropped_alone_and_never_asked_again() -> None:
    a = FakeGpu("GPU-a", unsupported={"power"})
    api = FakeNvml(a)
    p = poller(api)
    for _ in range(3):
        p.step()
    assert api.probe_reads == {"utilization": 3, "power": 1}
    assert figures(p.snapshot(), "GPU-a") == {m.GPU_UTILIZATION.name: 0.5}
    assert api.calls == ["close 1"]


def test_every_field_unsupported_keeps_the_gpu_up() -> None:
    api = FakeNvml(FakeGpu("GPU-a", unsupported={"power", "utilization"}))
    p = poller(api)
    p.step()
    p.step()
    assert ups(p.snapshot()) == {"GPU-a": True}  # its UUID still answers
    assert figures(p.snapshot(), "GPU-a") == {}


def test_driver_gone_mid_run_tears_down_and_reinitialises() -> None:
    api = FakeNvml(FakeGpu("GPU-a"))
    p = poller(api)
    p.step()
    api.down_mid_run = True
    assert p.step() == 0.0
    snap = p.snapshot()
    assert (snap.nvml_up, snap.poll_ok, snap.devices) == (False, False, ())
    assert api.shutdowns == 1
    api.down_mid_run = False
    p.step()
    assert api.inits == 2
    assert ups(p.snapshot()) == {"GPU-a": True}


def test_mig_devices_are_listed_and_selected_by_parent() -> None:
    api = FakeNvml(FakeGpu("GPU-a", migs=["MIG-1", "MIG-2"]), FakeGpu("GPU-b"))
    p = poller(api, selection=("GPU-a",))
    p.step()
    devices = {d.identity.uuid: d.identity.parent_uuid for d in p.snapshot().devices}
    assert devices == {"GPU-a": "", "MIG-1": "GPU-a", "MIG-2": "GPU-a"}


@pytest.mark.parametrize("selection", [("1",), ("GPU-b",)])
def test_selection_by_index_or_uuid(selection: tuple[str, ...]) -> None:
    p = poller(FakeNvml(FakeGpu("GPU-a"), FakeGpu("GPU-b")), selection)
    p.step()
    assert ups(p.snapshot()) == {"GPU-b": True}
