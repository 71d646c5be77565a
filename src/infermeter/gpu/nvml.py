"""The NVML boundary: nvidia-ml-py calls, error classification and per-field probes.

Probes read one kind of figure each, so that a field a device does not support can be
dropped on its own (NotSupported / FunctionNotFound) while the rest keep being read.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pynvml

from infermeter import metrics as m
from infermeter.gpu.model import DeviceIdentity, Reading

Handle = Any  # a ctypes pointer from nvidia-ml-py
NVMLError = pynvml.NVMLError  # for `except`; nvidia-ml-py has no type stubs


class ErrorLike(Protocol):
    value: int


class Failure(enum.Enum):
    NOT_SUPPORTED = "not_supported"  # stop asking this device for this field
    GPU_LOST = "gpu_lost"  # the device is gone or broken: gpu_up 0
    NVML_DOWN = "nvml_down"  # library or driver gone: re-initialise with backoff
    TRANSIENT = "transient"  # skip this round


_NOT_SUPPORTED = {
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
    pynvml.NVML_ERROR_NO_PERMISSION,
    pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
}
_GPU_LOST = {
    pynvml.NVML_ERROR_GPU_IS_LOST,
    pynvml.NVML_ERROR_UNKNOWN,
    pynvml.NVML_ERROR_RESET_REQUIRED,
    pynvml.NVML_ERROR_IRQ_ISSUE,
}
_NVML_DOWN = {
    pynvml.NVML_ERROR_UNINITIALIZED,
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
}


def classify(error: ErrorLike) -> Failure:
    code = error.value
    if code in _NOT_SUPPORTED:
        return Failure.NOT_SUPPORTED
    if code in _GPU_LOST:
        return Failure.GPU_LOST
    if code in _NVML_DOWN:
        return Failure.NVML_DOWN
    return Failure.TRANSIENT


def describe(error: ErrorLike) -> str:
    """A short reason for logs that never calls back into a possibly broken library."""
    name = next(
        (k for k, v in vars(pynvml).items() if k.startswith("NVML_ERROR_") and v == error.value),
        f"NVML_ERROR_{error.value}",
    )
    return name.removeprefix("NVML_ERROR_").lower()


def init() -> None:
    pynvml.nvmlInit()


def shutdown() -> None:
    pynvml.nvmlShutdown()


def optional(read: Callable[[], str]) -> str:
    """A label value that a driver may lack: empty when NVML cannot say, never an error."""
    try:
        return read()
    except NVMLError as error:
        if classify(error) is not Failure.NOT_SUPPORTED:
            raise
        return ""


def driver_version() -> str:
    return optional(lambda: str(pynvml.nvmlSystemGetDriverVersion()))


def bindings_version() -> str:
    try:
        from importlib.metadata import version

        return version("nvidia-ml-py")
    except Exception:  # noqa: BLE001 - a missing dist-info must not stop start-up
        return "unknown"


def device_count() -> int:
    return int(pynvml.nvmlDeviceGetCount())


def handle_by_index(index: int) -> Handle:
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def handle_key(handle: Handle) -> int:
    """A stable number for a handle, to match event data back to a device."""
    return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)


def _pci_bus_id(handle: Handle) -> str:
    bus_id = pynvml.nvmlDeviceGetPciInfo(handle).busId
    return bus_id.decode() if isinstance(bus_id, bytes) else str(bus_id)


def gpu_identity(index: int, handle: Handle) -> DeviceIdentity:
    """Handle, UUID and name are all a GPU needs; the PCI bus id is a label it may lack."""
    return DeviceIdentity(
        index=index,
        uuid=str(pynvml.nvmlDeviceGetUUID(handle)),
        name=str(pynvml.nvmlDeviceGetName(handle)),
        pci_bus_id=optional(lambda: _pci_bus_id(handle)),
    )


def mig_handles(handle: Handle) -> Iterator[Handle]:
    """MIG devices of a GPU in MIG mode; nothing for a GPU without MIG."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except NVMLError as error:
        if classify(error) is Failure.NOT_SUPPORTED:
            return
        raise
    if current != pynvml.NVML_DEVICE_MIG_ENABLE:
        return
    for slot in range(int(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
        try:
            yield pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except NVMLError as error:
            if error.value in (pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_ERROR_INVALID_ARGUMENT):
                continue
            raise


def mig_identity(parent: DeviceIdentity, handle: Handle) -> DeviceIdentity:
    name = str(pynvml.nvmlDeviceGetName(handle))
    return DeviceIdentity(
        index=parent.index,
        uuid=str(pynvml.nvmlDeviceGetUUID(handle)),
        name=name,
        pci_bus_id=parent.pci_bus_id,
        parent_uuid=parent.uuid,
        gpu_instance_id=optional(lambda: str(pynvml.nvmlDeviceGetGpuInstanceId(handle))),
        mig_profile=mig_profile(name),
    )


def mig_profile(name: str) -> str:
    """The profile ("1g.10gb") from a MIG device name ("NVIDIA H100 80GB HBM3 MIG 1g.10gb")."""
    head, sep, profile = name.rpartition(" MIG ")
    return profile.strip() if sep and head else ""


def uuid_of(handle: Handle) -> str:
    return str(pynvml.nvmlDeviceGetUUID(handle))


# --- probes ----------------------------------------------------------------------------------
Probe = Callable[[Handle], list[Reading]]


def _utilization(handle: Handle) -> list[Reading]:
    rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
    return [
        Reading(m.GPU_UTILIZATION, rates.gpu / 100.0),
        Reading(m.GPU_MEMORY_UTILIZATION, rates.memory / 100.0),
    ]


# A newer call the driver lacks (or whose struct version it does not know): use the older one.
_NEWER_API_MISSING = {
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
    pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
}


class _Memory:
    """v2 reports reserved memory separately; drivers before r510 only have v1."""

    def __init__(self) -> None:
        self.v2 = True

    def __call__(self, handle: Handle) -> list[Reading]:
        if self.v2:
            try:
                info = pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
            except NVMLError as error:
                if classify(error) is not Failure.NOT_SUPPORTED:
                    raise
                self.v2 = False
            else:
                return [
                    Reading(m.GPU_MEMORY_USED, float(info.used)),
                    Reading(m.GPU_MEMORY_FREE, float(info.free)),
                    Reading(m.GPU_MEMORY_TOTAL, float(info.total)),
                    Reading(m.GPU_MEMORY_RESERVED, float(info.reserved)),
                ]
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return [
            Reading(m.GPU_MEMORY_USED, float(info.used)),
            Reading(m.GPU_MEMORY_FREE, float(info.free)),
            Reading(m.GPU_MEMORY_TOTAL, float(info.total)),
        ]


class _Temperature:
    """`nvmlDeviceGetTemperatureV` since r535 (the legacy call is deprecated); older drivers
    only have `nvmlDeviceGetTemperature`."""

    def __init__(self) -> None:
        self.versioned = True

    def __call__(self, handle: Handle) -> list[Reading]:
        if self.versioned:
            try:
                value = pynvml.nvmlDeviceGetTemperatureV(handle, pynvml.NVML_TEMPERATURE_GPU)
            except NVMLError as error:
                if error.value not in _NEWER_API_MISSING:
                    raise
                self.versioned = False
            else:
                return [Reading(m.GPU_TEMPERATURE, float(value))]
        value = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        return [Reading(m.GPU_TEMPERATURE, float(value))]


_FIELD_VALUE_MEMBERS = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}


def _memory_temperature(handle: Handle) -> list[Reading]:
    (value,) = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_MEMORY_TEMP])
    if value.nvmlReturn != pynvml.NVML_SUCCESS:
        raise NVMLError(value.nvmlReturn)
    member = _FIELD_VALUE_MEMBERS.get(value.valueType, "uiVal")
    return [Reading(m.GPU_MEMORY_TEMPERATURE, float(getattr(value.value, member)))]


def _power(handle: Handle) -> list[Reading]:
    return [Reading(m.GPU_POWER, pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)]


def _power_limit(handle: Handle) -> list[Reading]:
    return [Reading(m.GPU_POWER_LIMIT, pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0)]


def _energy(handle: Handle) -> list[Reading]:
    return [Reading(m.GPU_ENERGY, pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0)]


def _clock(kind: int, label: str) -> Probe:
    def read(handle: Handle) -> list[Reading]:
        mhz = pynvml.nvmlDeviceGetClockInfo(handle, kind)
        return [Reading(m.GPU_CLOCK, mhz * 1e6, (label,))]

    read.__name__ = f"clock_{label}"
    return read


CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)


class _ClockEvents:
    """`ClocksEventReasons` since r535; older drivers only have `ClocksThrottleReasons`."""

    def __init__(self) -> None:
        self.events_api = True

    def __call__(self, handle: Handle) -> list[Reading]:
        mask = None
        if self.events_api:
            try:
                mask = pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle)
            except NVMLError as error:
                if error.value != pynvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                    raise
                self.events_api = False
        if mask is None:
            mask = pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
        return [
            Reading(m.GPU_CLOCK_EVENT, 1.0 if mask & bit else 0.0, (name,))
            for bit, name in CLOCK_EVENT_REASONS
        ]


def _fan(handle: Handle) -> list[Reading]:
    return [Reading(m.GPU_FAN, pynvml.nvmlDeviceGetFanSpeed(handle) / 100.0)]


def _pcie_replays(handle: Handle) -> list[Reading]:
    return [Reading(m.GPU_PCIE_REPLAYS, float(pynvml.nvmlDeviceGetPcieReplayCounter(handle)))]


def _ecc(handle: Handle) -> list[Reading]:
    return [
        Reading(
            m.GPU_ECC_ERRORS,
            float(pynvml.nvmlDeviceGetTotalEccErrors(handle, error_type, pynvml.NVML_VOLATILE_ECC)),
            (label,),
        )
        for error_type, label in (
            (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, "corrected"),
            (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "uncorrected"),
        )
    ]


def _remapped_rows(handle: Handle) -> list[Reading]:
    correctable, uncorrectable, pending, failed = pynvml.nvmlDeviceGetRemappedRows(handle)
    return [
        Reading(m.GPU_REMAPPED_ROWS, float(correctable), ("correctable",)),
        Reading(m.GPU_REMAPPED_ROWS, float(uncorrectable), ("uncorrectable",)),
        Reading(m.GPU_ROW_REMAP_PENDING, 1.0 if pending else 0.0),
        Reading(m.GPU_ROW_REMAP_FAILED, 1.0 if failed else 0.0),
    ]


class _Gpm:
    """Engine activity from GPU performance monitoring (Hopper and later): the graphics/compute
    engine and the tensor pipes, as fractions of the time between two polls. DCGM's profiling
    fields (GR_ENGINE_ACTIVE, PIPE_TENSOR_ACTIVE) are these counters; utilization (above) is
    NVML's coarser "a kernel ran" figure. The first poll only takes a sample."""

    # NVML_GPM_METRIC_GRAPHICS_UTIL, NVML_GPM_METRIC_ANY_TENSOR_UTIL (percent)
    METRICS = ((1, m.GPU_GRAPHICS_ACTIVE), (5, m.GPU_TENSOR_ACTIVE))

    def __init__(self) -> None:
        self.samples: list[Any] = []  # [previous, current], allocated on the first call

    def __call__(self, handle: Handle) -> list[Reading]:
        if not self.samples:
            if not hasattr(pynvml, "c_nvmlGpmMetricsGet_t"):  # bindings older than GPM
                raise NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
            if not pynvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice:
                raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            self.samples = [pynvml.nvmlGpmSampleAlloc(), pynvml.nvmlGpmSampleAlloc()]
            pynvml.nvmlGpmSampleGet(handle, self.samples[1])
            return []
        previous, current = self.samples[1], self.samples[0]
        pynvml.nvmlGpmSampleGet(handle, current)
        self.samples = [previous, current]
        request = pynvml.c_nvmlGpmMetricsGet_t()
        request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(self.METRICS)
        request.sample1, request.sample2 = previous, current
        for slot, (metric_id, _spec) in enumerate(self.METRICS):
            request.metrics[slot].metricId = metric_id
        pynvml.nvmlGpmMetricsGet(request)
        return [
            Reading(spec, request.metrics[slot].value / 100.0)
            for slot, (_id, spec) in enumerate(self.METRICS)
            if request.metrics[slot].nvmlReturn == pynvml.NVML_SUCCESS
        ]

    def close(self) -> None:
        """Free the two samples (NVML allocates them); called before NVML shuts down."""
        for sample in self.samples:
            with contextlib.suppress(NVMLError):
                pynvml.nvmlGpmSampleFree(sample)
        self.samples = []


def close_probes(probes: list[Probe]) -> None:
    for probe in probes:
        close = getattr(probe, "close", None)
        if close is not None:
            close()


def make_probes() -> list[Probe]:
    """Fresh probes for one device (some remember which API generation works)."""
    return [
        _utilization,
        _Memory(),
        _Temperature(),
        _memory_temperature,
        _power,
        _power_limit,
        _energy,
        _clock(pynvml.NVML_CLOCK_GRAPHICS, "graphics"),
        _clock(pynvml.NVML_CLOCK_SM, "sm"),
        _clock(pynvml.NVML_CLOCK_MEM, "memory"),
        _ClockEvents(),
        _fan,
        _pcie_replays,
        _ecc,
        _remapped_rows,
        _Gpm(),
    ]


# --- XID events ------------------------------------------------------------------------------
def event_set_create() -> Any:
    return pynvml.nvmlEventSetCreate()


def register_xid_events(handle: Handle, event_set: Any) -> None:
    pynvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, event_set)


def wait_event(event_set: Any, timeout_ms: int) -> tuple[int, int] | None:
    """(device handle key, xid) of the next XID event, or None on timeout."""
    try:
        data = pynvml.nvmlEventSetWait_v2(event_set, timeout_ms)
    except NVMLError as error:
        if error.value == pynvml.NVML_ERROR_TIMEOUT:
            return None
        raise
    if data.eventType != pynvml.nvmlEventTypeXidCriticalError:
        return None
    return handle_key(data.device), int(data.eventData)


def event_set_free(event_set: Any) -> None:
    pynvml.nvmlEventSetFree(event_set)
