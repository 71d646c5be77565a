"""The fake NVML against the real pynvml bindings, per harness/fake_nvml/SPEC.md.

Each scenario runs in a subprocess because glibc reads LD_LIBRARY_PATH only at process start
(and pynvml keeps the library loaded for the life of the process). The child prints one JSON
line of results; the parent compares them with the state file it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.fake_nvml.build import LIBRARY_NAME, SOURCE, build

GiB = 1024**3

# Shared by every child: call a pynvml function, return its value or the error class name.
PRELUDE = """
import ctypes, json, os, sys, threading, time
import pynvml

CONFIG = os.environ.get("FAKE_NVML_CONFIG", "")

def call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except pynvml.NVMLError as error:
        return type(error).__name__

def addr(handle):
    return ctypes.cast(handle, ctypes.c_void_p).value

def swap(name):
    # Atomically replace the state file with a sibling the parent prepared.
    os.replace(os.path.join(os.path.dirname(CONFIG), name), CONFIG)
"""


def run(
    lib_dir: Path, config: Path | None, body: str, helpers: str = "", args: Sequence[str] = ()
) -> Any:
    """Run a child script against the fake library and return the JSON it printed last.

    helpers (unindented code) goes before body (indented, dedented here); args is sys.argv[1:].
    """
    env = {k: v for k, v in os.environ.items() if k != "FAKE_NVML_CONFIG"}
    env["LD_LIBRARY_PATH"] = str(lib_dir)
    if config is not None:
        env["FAKE_NVML_CONFIG"] = str(config)
    script = PRELUDE + helpers + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    result["stderr"] = proc.stderr
    return result


def write_state(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def gpu(index: int, **overrides: Any) -> dict[str, Any]:
    device: dict[str, Any] = {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": f"GPU-{index:08x}-0000-0000-0000-000000000000",
        "pci_bus_id": f"00000000:{0x17 + index:02X}:00.0",
        "utilization_gpu": 37 + index,
        "utilization_memory": 12,
        "memory_total": 80 * GiB,
        "memory_reserved": GiB // 2,
        "memory_used": 20 * GiB,
        "memory_free": 59 * GiB + GiB // 2,
        "temperature_gpu": 41,
        "temperature_memory": 45 + index,
        "power_usage_mw": 250_000,
        "power_limit_mw": 700_000,
        "energy_mj": 123_456_789_012,
        "clock_graphics_mhz": 1980,
        "clock_sm_mhz": 1970,
        "clock_mem_mhz": 2619,
        "clocks_event_reasons": 4,
        "fan_speed": 30,
        "pcie_replay": 3,
        "ecc_corrected_volatile": 1,
        "ecc_uncorrected_volatile": 2,
        "ecc_corrected_aggregate": 3,
        "ecc_uncorrected_aggregate": 4,
        "remapped_rows": {"correctable": 5, "uncorrectable": 6, "pending": 1, "failure": 0},
    }
    device.update(overrides)
    return device


def mig(slot: int) -> dict[str, Any]:
    return {
        "name": "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
        "uuid": f"MIG-0000000{slot}-aaaa-bbbb-cccc-000000000000",
        "gpu_instance_id": 7 + slot,
        "compute_instance_id": slot,
        "memory_total": 10 * GiB,
        "memory_used": GiB,
        "memory_free": 8 * GiB,
        "memory_reserved": GiB,
        "fault": None,
    }


def state(devices: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    return {"driver_version": "550.54.15", "nvml_version": "12.550.54.15", "devices": devices} | top


READ_GPU = """
def read_gpu(h):
    mem1 = call(pynvml.nvmlDeviceGetMemoryInfo, h)
    mem2 = call(pynvml.nvmlDeviceGetMemoryInfo, h, version=pynvml.nvmlMemory_v2)
    pci = pynvml.nvmlDeviceGetPciInfo_v3(h)
    util = pynvml.nvmlDeviceGetUtilizationRates(h)
    (field, other) = pynvml.nvmlDeviceGetFieldValues(h, [pynvml.NVML_FI_DEV_MEMORY_TEMP, 83])
    return {
        "index": pynvml.nvmlDeviceGetIndex(h),
        "name": pynvml.nvmlDeviceGetName(h),
        "uuid": pynvml.nvmlDeviceGetUUID(h),
        "by_uuid": addr(pynvml.nvmlDeviceGetHandleByUUID(pynvml.nvmlDeviceGetUUID(h))) == addr(h),
        "pci": [pci.busId, pci.busIdLegacy, pci.domain, pci.bus, pci.device],
        "util": [util.gpu, util.memory],
        "mem_v1": [mem1.total, mem1.free, mem1.used],
        "mem_v2": [mem2.total, mem2.reserved, mem2.free, mem2.used],
        "mem_bad_version": call(pynvml.nvmlDeviceGetMemoryInfo, h, version=0x01000028),
        "temperature": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
        "field": [field.nvmlReturn, field.valueType, field.value.uiVal, other.nvmlReturn],
        "power": pynvml.nvmlDeviceGetPowerUsage(h),
        "limit": pynvml.nvmlDeviceGetEnforcedPowerLimit(h),
        "energy": pynvml.nvmlDeviceGetTotalEnergyConsumption(h),
        "clocks": [call(pynvml.nvmlDeviceGetClockInfo, h, t) for t in range(4)],
        "event_reasons": pynvml.nvmlDeviceGetCurrentClocksEventReasons(h),
        "throttle_reasons": pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h),
        "fan": pynvml.nvmlDeviceGetFanSpeed(h),
        "pcie_replay": pynvml.nvmlDeviceGetPcieReplayCounter(h),
        "ecc": [pynvml.nvmlDeviceGetTotalEccErrors(h, e, c) for e in (0, 1) for c in (0, 1)],
        "remapped": list(pynvml.nvmlDeviceGetRemappedRows(h)),
        "mig_mode": pynvml.nvmlDeviceGetMigMode(h),
        "max_mig": pynvml.nvmlDeviceGetMaxMigDeviceCount(h),
        "events": pynvml.nvmlDeviceGetSupportedEventTypes(h),
        "is_mig": pynvml.nvmlDeviceIsMigDeviceHandle(h).value,
    }

def read_mig(h):
    mem1 = pynvml.nvmlDeviceGetMemoryInfo(h)
    mem2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
    parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h)
    return {
        "name": pynvml.nvmlDeviceGetName(h),
        "uuid": pynvml.nvmlDeviceGetUUID(h),
        "mem_v1": [mem1.total, mem1.free, mem1.used],
        "mem_v2": [mem2.total, mem2.reserved, mem2.free, mem2.used],
        "gi": pynvml.nvmlDeviceGetGpuInstanceId(h),
        "ci": pynvml.nvmlDeviceGetComputeInstanceId(h),
        "is_mig": pynvml.nvmlDeviceIsMigDeviceHandle(h).value,
        "parent": pynvml.nvmlDeviceGetIndex(parent),
        "by_uuid": addr(pynvml.nvmlDeviceGetHandleByUUID(pynvml.nvmlDeviceGetUUID(h))) == addr(h),
        "power": call(pynvml.nvmlDeviceGetPowerUsage, h),
        "index": call(pynvml.nvmlDeviceGetIndex, h),
    }
"""


def expected_gpu(d: dict[str, Any], index: int, migs: int) -> dict[str, Any]:
    """What read_gpu must report for device d, derived from the state file only."""
    bus = int(d["pci_bus_id"].split(":")[1], 16)
    return {
        "index": index,
        "name": d["name"],
        "uuid": d["uuid"],
        "by_uuid": True,
        "pci": [d["pci_bus_id"], f"0000:{bus:02X}:00.0", 0, bus, 0],
        "util": [d["utilization_gpu"], d["utilization_memory"]],
        "mem_v1": [d["memory_total"], d["memory_free"], d["memory_used"] + d["memory_reserved"]],
        "mem_v2": [d[f"memory_{k}"] for k in ("total", "reserved", "free", "used")],
        "mem_bad_version": "NVMLError_ArgumentVersionMismatch",
        "temperature": d["temperature_gpu"],
        "field": [0, 1, d["temperature_memory"], 3],
        "power": d["power_usage_mw"],
        "limit": d["power_limit_mw"],
        "energy": d["energy_mj"],
        "clocks": [
            *(d[f"clock_{k}_mhz"] for k in ("graphics", "sm", "mem")),
            "NVMLError_NotSupported",
        ],
        "event_reasons": d["clocks_event_reasons"],
        "throttle_reasons": d["clocks_event_reasons"],
        "fan": d["fan_speed"],
        "pcie_replay": d["pcie_replay"],
        "ecc": [
            d[f"ecc_{e}_{c}"]
            for e in ("corrected", "uncorrected")
            for c in ("volatile", "aggregate")
        ],
        "remapped": list(d["remapped_rows"].values()),
        "mig_mode": [1, 1] if migs else [0, 0],
        "max_mig": 7,
        "events": 0x1F,
        "is_mig": 0,
    }


def test_every_function_reads_the_state_file(tmp_path: Path, fake_nvml_dir: Path) -> None:
    devices = [gpu(0), gpu(1, mig_devices=[mig(0), mig(1)])]
    config = write_state(tmp_path / "state.json", state(devices))
    out = run(
        fake_nvml_dir,
        config,
        """
        pynvml.nvmlInit()
        n = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
        migs = [call(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handles[1], s) for s in range(3)]
        result = {
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "nvml": pynvml.nvmlSystemGetNVMLVersion(),
            "count": n,
            "past_count": call(pynvml.nvmlDeviceGetHandleByIndex, n),
            "unknown_uuid": call(pynvml.nvmlDeviceGetHandleByUUID, "GPU-nope"),
            "gpus": [read_gpu(h) for h in handles],
            "migs": [read_mig(h) for h in migs[:2]],
            "mig_past_end": migs[2],
            "mig_on_gpu0": call(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handles[0], 0),
            "error_string": pynvml.nvmlErrorString(pynvml.NVML_ERROR_GPU_IS_LOST),
        }
        pynvml.nvmlShutdown()
        result["after_shutdown"] = call(pynvml.nvmlDeviceGetPowerUsage, handles[0])
        print(json.dumps(result))
        """,
        helpers=READ_GPU,
    )
    assert out["driver"] == "550.54.15"
    assert out["nvml"] == "12.550.54.15"
    assert out["count"] == 2
    assert out["past_count"] == "NVMLError_InvalidArgument"
    assert out["unknown_uuid"] == "NVMLError_NotFound"
    assert out["gpus"] == [
        expected_gpu(d, i, len(d.get("mig_devices", []))) for i, d in enumerate(devices)
    ]
    assert out["migs"] == [
        {
            "name": m["name"],
            "uuid": m["uuid"],
            "mem_v1": [
                m["memory_total"],
                m["memory_free"],
                m["memory_used"] + m["memory_reserved"],
            ],
            "mem_v2": [m[f"memory_{k}"] for k in ("total", "reserved", "free", "used")],
            "gi": m["gpu_instance_id"],
            "ci": m["compute_instance_id"],
            "is_mig": 1,
            "parent": 1,
            "by_uuid": True,
            "power": "NVMLError_NotSupported",
            "index": "NVMLError_NotSupported",
        }
        for m in devices[1]["mig_devices"]
    ]
    assert out["mig_past_end"] == "NVMLError_NotFound"
    assert out["mig_on_gpu0"] == "NVMLError_NotFound"
    assert out["error_string"] == "GPU is lost"
    assert out["after_shutdown"] == "NVMLError_Uninitialized"


# Every per-device call, with the error (or value) it returned, for one handle.
PROBE = """
PROBES = {
    "name": lambda h: pynvml.nvmlDeviceGetName(h),
    "uuid": lambda h: pynvml.nvmlDeviceGetUUID(h),
    "pci": lambda h: pynvml.nvmlDeviceGetPciInfo_v3(h).busId,
    "util": lambda h: pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
    "mem_v1": lambda h: pynvml.nvmlDeviceGetMemoryInfo(h).total,
    "mem_v2": lambda h: pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2).total,
    "temperature": lambda h: pynvml.nvmlDeviceGetTemperature(h, 0),
    "field": lambda h: pynvml.nvmlDeviceGetFieldValues(h, [82])[0].nvmlReturn,
    "power": pynvml.nvmlDeviceGetPowerUsage,
    "limit": pynvml.nvmlDeviceGetEnforcedPowerLimit,
    "energy": pynvml.nvmlDeviceGetTotalEnergyConsumption,
    "clock": lambda h: pynvml.nvmlDeviceGetClockInfo(h, 0),
    "event_reasons": pynvml.nvmlDeviceGetCurrentClocksEventReasons,
    "throttle_reasons": pynvml.nvmlDeviceGetCurrentClocksThrottleReasons,
    "fan": pynvml.nvmlDeviceGetFanSpeed,
    "pcie_replay": pynvml.nvmlDeviceGetPcieReplayCounter,
    "ecc": lambda h: pynvml.nvmlDeviceGetTotalEccErrors(h, 0, 0),
    "remapped": pynvml.nvmlDeviceGetRemappedRows,
    "index": pynvml.nvmlDeviceGetIndex,
}

def probe(h):
    return {name: call(fn, h) for name, fn in PROBES.items()}
"""

PROBED = [
    "name", "uuid", "pci", "util", "mem_v1", "mem_v2", "temperature", "field", "power", "limit",
    "energy", "clock", "event_reasons", "throttle_reasons", "fan", "pcie_replay", "ecc",
    "remapped", "index",
]  # fmt: skip


def test_absent_keys_and_faults(tmp_path: Path, fake_nvml_dir: Path) -> None:
    lost_mig = mig(0) | {"fault": "GPU_IS_LOST"}
    devices = [
        {"name": "bare", "remapped_rows": {"correctable": 0}},  # every other key absent
        gpu(1, fault="GPU_IS_LOST"),
        gpu(2, fault="UNKNOWN"),
        gpu(3, mig_devices=[lost_mig]),
    ]
    config = write_state(tmp_path / "state.json", state(devices))
    out = run(
        fake_nvml_dir,
        config,
        """
        pynvml.nvmlInit()
        bare = pynvml.nvmlDeviceGetHandleByIndex(0)
        gpu3 = pynvml.nvmlDeviceGetHandleByIndex(3)
        print(json.dumps({
            "bare": probe(bare),
            "lost_by_index": call(pynvml.nvmlDeviceGetHandleByIndex, 1),
            "unknown_by_index": call(pynvml.nvmlDeviceGetHandleByIndex, 2),
            "lost_by_uuid": call(pynvml.nvmlDeviceGetHandleByUUID, sys.argv[1]),
            "lost_mig": call(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, gpu3, 0),
            "gpu3_power": pynvml.nvmlDeviceGetPowerUsage(gpu3),
            "not_ours": call(pynvml.nvmlDeviceGetPowerUsage, ctypes.cast(addr(bare) + 1,
                             pynvml.c_nvmlDevice_t)),
        }))
        """,
        helpers=PROBE,
        args=[devices[1]["uuid"]],
    )
    bare: dict[str, Any] = dict.fromkeys(PROBED, "NVMLError_NotSupported")
    bare |= {"name": "bare", "field": 3, "index": 0}
    assert out["bare"] == bare
    assert out["lost_by_index"] == "NVMLError_GpuIsLost"
    assert out["unknown_by_index"] == "NVMLError_Unknown"
    assert out["lost_by_uuid"] == "NVMLError_GpuIsLost"
    assert out["lost_mig"] == "NVMLError_GpuIsLost"
    assert out["gpu3_power"] == devices[3]["power_usage_mw"]
    assert out["not_ours"] == "NVMLError_InvalidArgument"


def test_fault_appears_mid_run_on_a_live_handle(tmp_path: Path, fake_nvml_dir: Path) -> None:
    config = write_state(tmp_path / "state.json", state([gpu(0), gpu(1)]))
    write_state(tmp_path / "lost.json", state([gpu(0, fault="GPU_IS_LOST"), gpu(1)]))
    write_state(tmp_path / "back.json", state([gpu(0), gpu(1)]))
    out = run(
        fake_nvml_dir,
        config,
        """
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        swap("lost.json")
        lost = probe(h)
        swap("back.json")
        print(json.dumps({"lost": lost, "back": call(pynvml.nvmlDeviceGetPowerUsage, h)}))
        """,
        helpers=PROBE,
    )
    assert out["lost"] == dict.fromkeys(PROBED, "NVMLError_GpuIsLost")
    assert out["back"] == gpu(0)["power_usage_mw"]


def test_init_errors(tmp_path: Path, fake_nvml_dir: Path) -> None:
    config = write_state(tmp_path / "state.json", state([gpu(0)], init_error="DRIVER_NOT_LOADED"))
    write_state(tmp_path / "ok.json", state([gpu(0)]))
    out = run(
        fake_nvml_dir,
        None,
        """
        unset = call(pynvml.nvmlInit)
        CONFIG = os.environ["FAKE_NVML_CONFIG"] = sys.argv[1]
        configured = call(pynvml.nvmlInit)
        swap("ok.json")
        print(json.dumps({"unset": unset, "configured": configured, "ok": call(pynvml.nvmlInit),
                          "count": pynvml.nvmlDeviceGetCount()}))
        """,
        args=[str(config)],
    )
    assert out["unset"] == "NVMLError_DriverNotLoaded"
    assert out["configured"] == "NVMLError_DriverNotLoaded"
    assert out["ok"] is None
    assert out["count"] == 1


def test_state_file_replaced_mid_run(tmp_path: Path, fake_nvml_dir: Path) -> None:
    config = write_state(tmp_path / "state.json", state([gpu(0), gpu(1)]))
    changed = [gpu(0, power_usage_mw=111_000), gpu(1, mig_devices=[mig(0)])]
    write_state(tmp_path / "changed.json", state(changed, driver_version="560.1"))
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    write_state(tmp_path / "shrunk.json", state([gpu(0)]))
    out = run(
        fake_nvml_dir,
        config,
        """
        pynvml.nvmlInit()
        h0, h1 = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(2)]
        before = pynvml.nvmlDeviceGetPowerUsage(h0)
        swap("changed.json")
        after = [pynvml.nvmlDeviceGetPowerUsage(h0), pynvml.nvmlSystemGetDriverVersion(),
                 pynvml.nvmlDeviceGetMigMode(h1),
                 pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h1, 0))]
        same_handle = addr(pynvml.nvmlDeviceGetHandleByIndex(0)) == addr(h0)
        swap("broken.json")
        kept = [pynvml.nvmlDeviceGetPowerUsage(h0), pynvml.nvmlDeviceGetCount()]
        swap("shrunk.json")
        shrunk = [pynvml.nvmlDeviceGetCount(), call(pynvml.nvmlDeviceGetPowerUsage, h1)]
        print(json.dumps({"before": before, "after": after, "same_handle": same_handle,
                          "kept": kept, "shrunk": shrunk}))
        """,
    )
    assert out["before"] == 250_000
    assert out["after"] == [111_000, "560.1", [1, 1], changed[1]["mig_devices"][0]["name"]]
    assert out["same_handle"] is True
    assert out["kept"] == [111_000, 2]
    assert out["shrunk"] == [1, "NVMLError_InvalidArgument"]
    assert out["stderr"].count("fake_nvml:") == 1, out["stderr"]


def test_xid_events(tmp_path: Path, fake_nvml_dir: Path) -> None:
    events = [
        {"id": 2, "device": 0, "xid": 79},
        {"id": 1, "device": 0, "xid": 13},
        {"id": 3, "device": 1, "xid": 48},  # GPU 1 is not registered: never delivered
    ]
    config = write_state(tmp_path / "state.json", state([gpu(0), gpu(1)], xid_events=events))
    later = [*events, {"id": 4, "device": 0, "xid": 94}]
    write_state(tmp_path / "later.json", state([gpu(0), gpu(1)], xid_events=later))
    out = run(
        fake_nvml_dir,
        config,
        """
        pynvml.nvmlInit()
        h0 = pynvml.nvmlDeviceGetHandleByIndex(0)
        es = pynvml.nvmlEventSetCreate()
        pynvml.nvmlDeviceRegisterEvents(h0, pynvml.nvmlEventTypeXidCriticalError, es)

        def event(timeout_ms):
            try:
                d = pynvml.nvmlEventSetWait_v2(es, timeout_ms)
            except pynvml.NVMLError as error:
                return type(error).__name__
            return [addr(d.device) == addr(h0), d.eventType, d.eventData, d.gpuInstanceId,
                    d.computeInstanceId]

        first, second = event(1000), event(1000)
        t0 = time.monotonic()
        empty = event(100)
        empty_ms = (time.monotonic() - t0) * 1000

        # A waiting thread must not block device calls from other threads.
        box = {}
        waiter = threading.Thread(target=lambda: box.update(ev=event(5000)))
        waiter.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        for _ in range(20):
            pynvml.nvmlDeviceGetPowerUsage(h0)
        calls_ms = (time.monotonic() - t0) * 1000
        swap("later.json")
        waiter.join()

        es2 = pynvml.nvmlEventSetCreate()
        pynvml.nvmlDeviceRegisterEvents(h0, pynvml.nvmlEventTypeXidCriticalError, es2)
        again = call(pynvml.nvmlEventSetWait_v2, es2, 50)
        pynvml.nvmlEventSetFree(es)
        pynvml.nvmlEventSetFree(es2)
        print(json.dumps({"first": first, "second": second, "empty": empty,
                          "empty_ms": empty_ms, "calls_ms": calls_ms, "later": box["ev"],
                          "again": again}))
        """,
    )
    assert out["first"] == [True, 8, 13, 0xFFFFFFFF, 0xFFFFFFFF]
    assert out["second"] == [True, 8, 79, 0xFFFFFFFF, 0xFFFFFFFF]
    assert out["empty"] == "NVMLError_Timeout"
    assert 90 <= out["empty_ms"] < 1000
    assert out["calls_ms"] < 500
    assert out["later"] == [True, 8, 94, 0xFFFFFFFF, 0xFFFFFFFF]
    assert out["again"] == "NVMLError_Timeout"


def test_old_driver_lacks_new_symbols(tmp_path: Path, old_driver_nvml_dir: Path) -> None:
    config = write_state(tmp_path / "state.json", state([gpu(0)]))
    out = run(
        old_driver_nvml_dir,
        config,
        """
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        print(json.dumps({
            "mem_v2": call(pynvml.nvmlDeviceGetMemoryInfo, h, version=pynvml.nvmlMemory_v2),
            "event_reasons": call(pynvml.nvmlDeviceGetCurrentClocksEventReasons, h),
            "temperature_v": call(pynvml.nvmlDeviceGetTemperatureV, h, 0),
            "temperature": pynvml.nvmlDeviceGetTemperature(h, 0),
            "mem_v1": pynvml.nvmlDeviceGetMemoryInfo(h).total,
            "throttle": pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h),
        }))
        """,
    )
    assert out["mem_v2"] == "NVMLError_FunctionNotFound"
    assert out["event_reasons"] == "NVMLError_FunctionNotFound"
    assert out["temperature_v"] == "NVMLError_FunctionNotFound"
    assert out["temperature"] == gpu(0)["temperature_gpu"]
    assert out["mem_v1"] == gpu(0)["memory_total"]
    assert out["throttle"] == gpu(0)["clocks_event_reasons"]


def test_library_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    # whether one is installed, asked in the child: this test process may hold the fake
    # (harness.inprocess loads it), which dlopen would give for the bare name
    body = f"""
        try:
            ctypes.CDLL("{LIBRARY_NAME}")
            installed = True
        except OSError:
            installed = False
        print(json.dumps({{"installed": installed, "init": call(pynvml.nvmlInit)}}))
    """
    out = run(empty, None, body)
    if out["installed"]:
        pytest.skip("a real libnvidia-ml.so.1 is installed on this machine")
    assert out["init"] == "NVMLError_LibraryNotFound"


def test_build_is_incremental_and_per_variant(tmp_path: Path) -> None:
    library = build(tmp_path)
    built = library.stat().st_mtime_ns
    assert build(tmp_path) == library
    assert library.stat().st_mtime_ns == built  # nothing changed: no rebuild
    build(tmp_path, "old-driver")
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout
    assert "nvmlDeviceGetMemoryInfo_v2" not in symbols
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in symbols
    os.utime(library, ns=(0, 0))  # source newer than the library: rebuilt
    build(tmp_path, "old-driver")
    assert library.stat().st_mtime_ns > SOURCE.stat().st_mtime_ns
    with pytest.raises(ValueError, match="unknown variant"):
        build(tmp_path, "nope")


def test_versioned_temperature(tmp_path: Path, fake_nvml_dir: Path) -> None:
    without = gpu(1)
    del without["temperature_gpu"]
    config = write_state(tmp_path / "state.json", state([gpu(0, temperature_gpu=63), without]))
    out = run(
        fake_nvml_dir,
        config,
        """
        pynvml.nvmlInit()
        h0, h1 = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
        print(json.dumps({
            "v": pynvml.nvmlDeviceGetTemperatureV(h0, 0),
            "absent": call(pynvml.nvmlDeviceGetTemperatureV, h1, 0),
            "bad_version": call(pynvml.nvmlDeviceGetTemperatureV, h0, 0, version=7),
        }))
        """,
    )
    assert out["v"] == 63
    assert out["absent"] == "NVMLError_NotSupported"
    assert out["bad_version"] == "NVMLError_ArgumentVersionMismatch"


def test_omitted_symbols_are_absent_from_the_library(tmp_path: Path) -> None:
    library = build(tmp_path, omit=("nvmlDeviceGetPciInfo_v3", "nvmlEventSetWait_v2"))
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "nvmlDeviceGetPciInfo_v3" not in symbols
    assert "nvmlEventSetWait_v2" not in symbols
    assert "nvmlDeviceGetUUID" in symbols
    assert "nvmlEventSetCreate" in symbols
    config = write_state(tmp_path / "state.json", state([gpu(0)]))
    out = run(
        tmp_path,
        config,
        """
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        print(json.dumps({"pci": call(pynvml.nvmlDeviceGetPciInfo, h),
                          "uuid": pynvml.nvmlDeviceGetUUID(h)}))
        """,
    )
    assert out["pci"] == "NVMLError_FunctionNotFound"
    assert out["uuid"] == gpu(0)["uuid"]
    with pytest.raises(ValueError, match="cannot omit"):
        build(tmp_path, omit=("nvmlDeviceGetUUID",))


def test_gpm_metrics_between_two_samples(tmp_path: Path, fake_nvml_dir: Path) -> None:
    config = write_state(
        tmp_path / "state.json",
        state([gpu(0, gpm_graphics_util=55.5, gpm_tensor_util=30.25), gpu(1)]),
    )
    out = run(
        fake_nvml_dir,
        config,
        """
        pynvml.nvmlInit()
        h0, h1 = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
        s1, s2 = pynvml.nvmlGpmSampleAlloc(), pynvml.nvmlGpmSampleAlloc()

        def get(first, second, ids=(1, 5, 2)):
            request = pynvml.c_nvmlGpmMetricsGet_t()
            request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = len(ids)
            request.sample1, request.sample2 = first, second
            for slot, metric in enumerate(ids):
                request.metrics[slot].metricId = metric
            pynvml.nvmlGpmMetricsGet(request)
            return [[m.nvmlReturn, m.value] for m in request.metrics[: len(ids)]]

        pynvml.nvmlGpmSampleGet(h0, s1)
        time.sleep(0.01)
        pynvml.nvmlGpmSampleGet(h0, s2)
        print(json.dumps({
            "supported": [pynvml.nvmlGpmQueryDeviceSupport(h).isSupportedDevice for h in (h0, h1)],
            "metrics": get(s1, s2),
            "backwards": call(get, s2, s1),
            "other_device": call(pynvml.nvmlGpmSampleGet, h1, s1),
            "free": [pynvml.nvmlGpmSampleFree(s) for s in (s1, s2)],
        }))
        """,
    )
    assert out["supported"] == [1, 0]
    assert out["metrics"] == [[0, 55.5], [0, 30.25], [3, 0.0]]  # id 2: NOT_SUPPORTED
    assert out["backwards"] == "NVMLError_InvalidArgument"
    assert out["other_device"] == "NVMLError_NotSupported"
    assert out["free"] == [None, None]
