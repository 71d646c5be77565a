"""A driver that lacks an optional NVML function: that field goes, the GPU stays up.

Each case links the fake NVML with one symbol left out of its exports (as an older driver,
a vGPU guest or a minimal stub lacks it), runs the sidecar's GPU poller and collector with
the real nvidia-ml-py in a process of their own (`harness.gpu_probe`: one library per
process, and a third of `infermeter serve`'s start-up CPU; `test_gpu.py` covers the whole
sidecar with the full library), and checks that every other series still flows and
`infermeter_gpu_up` stays 1.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

from harness.fake_nvml import profiles
from harness.fake_nvml.build import OPTIONAL_SYMBOLS, build, compile_object
from harness.gpu_probe import run_gpu_probe
from harness.sidecar import samples, value, wait_for
from infermeter import metrics as m

pytestmark = pytest.mark.e2e

# The series each optional function alone provides; leaving it out must remove only these.
ONLY_FROM: dict[str, set[str]] = {
    "nvmlDeviceGetUtilizationRates": {
        m.GPU_UTILIZATION.name,
        m.GPU_MEMORY_UTILIZATION.name,
    },
    "nvmlDeviceGetMemoryInfo_v2": {m.GPU_MEMORY_RESERVED.name},  # v1 has no reserved
    "nvmlDeviceGetFieldValues": {m.GPU_MEMORY_TEMPERATURE.name},
    "nvmlDeviceGetPowerUsage": {m.GPU_POWER.name},
    "nvmlDeviceGetEnforcedPowerLimit": {m.GPU_POWER_LIMIT.name},
    "nvmlDeviceGetTotalEnergyConsumption": {m.GPU_ENERGY.name},
    "nvmlDeviceGetClockInfo": {m.GPU_CLOCK.name},
    "nvmlDeviceGetFanSpeed": {m.GPU_FAN.name},
    "nvmlDeviceGetPcieReplayCounter": {m.GPU_PCIE_REPLAYS.name},
    "nvmlDeviceGetTotalEccErrors": {m.GPU_ECC_ERRORS.name},
    "nvmlDeviceGetRemappedRows": {
        m.GPU_REMAPPED_ROWS.name,
        m.GPU_ROW_REMAP_PENDING.name,
        m.GPU_ROW_REMAP_FAILED.name,
    },
    **{
        symbol: {m.GPU_GRAPHICS_ACTIVE.name, m.GPU_TENSOR_ACTIVE.name}
        for symbol in (
            "nvmlGpmQueryDeviceSupport",
            "nvmlGpmSampleAlloc",
            "nvmlGpmSampleGet",
            "nvmlGpmMetricsGet",
        )
    },
    "nvmlEventSetCreate": {m.GPU_XID_ERRORS.name},
    "nvmlDeviceRegisterEvents": {m.GPU_XID_ERRORS.name},
    "nvmlEventSetWait_v2": {m.GPU_XID_ERRORS.name},
}
MIG_LISTING = {
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetMigDeviceHandleByIndex",
}
XID_EVENTS = {"nvmlEventSetCreate", "nvmlDeviceRegisterEvents", "nvmlEventSetWait_v2"}
# Every per-GPU series of a full GPU that supports everything (one XID event delivered).
FULL_GPU_SERIES = {spec.name for spec in m.CATALOGUE if spec.group == "gpu"} - {m.NVML_UP.name}


@pytest.fixture(scope="session")
def nvml_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake NVML compiled once: each case links its own library from it (omitting its
    symbol), which costs a link, not a compile."""
    return compile_object(tmp_path_factory.mktemp("nvml-object"))


def exported(text: str, **labels: str) -> set[str]:
    want = set(labels.items())
    return {name for name, sample_labels in samples(text) if want <= set(sample_labels)}


def missing_for(log: str) -> set[str]:
    """The devices the log says lack a function (a field dropped as function_not_found)."""
    lines = [line for line in log.splitlines() if "reason=function_not_found" in line]
    return {found.group(1) for line in lines if (found := re.search(r"uuid=(\S+)", line))}


@pytest.mark.parametrize("symbol", OPTIONAL_SYMBOLS)
def test_a_missing_optional_function_never_blinds_a_gpu(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, nvml_object: Path, symbol: str
) -> None:
    lib_dir = build(
        tmp_path_factory.mktemp(f"nvml-without-{symbol}"), omit=(symbol,), obj=nvml_object
    )
    parent = profiles.gpu(0, mig_devices=[profiles.mig(0, 0)])
    devices = [parent, profiles.gpu(1)]
    state = tmp_path / "nvml.json"
    profiles.write(state, profiles.state(devices, xid_events=[{"id": 1, "device": 1, "xid": 79}]))
    mig_uuid = str(profiles.mig(0, 0)["uuid"])
    gpu1 = str(devices[1]["uuid"])
    with run_gpu_probe(tmp_path, lib_dir.parent, state) as sidecar:
        sidecar.wait_metric("infermeter_gpu_up", 1.0, uuid=gpu1)
        if symbol not in XID_EVENTS:
            sidecar.wait_metric("infermeter_gpu_xid_errors_total", 1.0, uuid=gpu1, xid="79")
        gone = ONLY_FROM.get(symbol, set())
        # GPM figures need two samples a poll apart, so wait for the full set (a field that
        # never comes fails the assertion below with the last scrape's set)
        with contextlib.suppress(AssertionError):
            wait_for(
                lambda: exported(sidecar.metrics(), uuid=gpu1) == FULL_GPU_SERIES - gone,
                timeout=5,
            )
        sidecar.metrics()  # one more poll after any field was dropped
        text = sidecar.metrics()
        function_missing = bool(gone - {m.GPU_XID_ERRORS.name, m.GPU_MEMORY_RESERVED.name})
        if function_missing:
            # a scrape waits for no poll, and nvmlGpmMetricsGet is first called at the second
            # (the log was read before it, once); a line that never comes fails below
            with contextlib.suppress(AssertionError):
                wait_for(
                    lambda: missing_for(sidecar.log()) >= {gpu1, str(parent["uuid"])}, timeout=5
                )
        log = sidecar.log()

    assert value(text, "infermeter_gpu_up", uuid=gpu1) == 1.0
    assert value(text, "infermeter_gpu_up", uuid=str(parent["uuid"])) == 1.0
    assert "GPU unreadable" not in log
    have = exported(text, uuid=gpu1)
    assert have == FULL_GPU_SERIES - gone, symbol
    for name in gone:
        assert value(text, name) is None, name  # absent, not 0
    # the MIG device is listed unless the listing itself is what is missing
    mig_up = value(text, "infermeter_gpu_up", uuid=mig_uuid)
    assert mig_up == (None if symbol in MIG_LISTING else 1.0)
    # a field the driver lacks is logged once per device and field, however many polls pass
    dropped = [
        (re.search(r"uuid=(\S+)", line), re.search(r"field=(\S+)", line))
        for line in log.splitlines()
        if "GPU field not supported" in line
    ]
    pairs = [(u.group(1), f.group(1)) for u, f in dropped if u and f]
    assert len(pairs) == len(set(pairs)) == len(dropped), log
    if function_missing:
        assert missing_for(log) >= {gpu1, str(parent["uuid"])}, log
    labels = dict(next(labels for name, labels in samples(text) if name == "infermeter_gpu_info"))
    if symbol == "nvmlDeviceGetPciInfo_v3":
        assert labels["pci_bus_id"] == ""
    if symbol == "nvmlSystemGetDriverVersion":
        assert labels["driver_version"] == ""


def test_older_calls_are_used_when_the_newer_symbols_are_absent(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, nvml_object: Path
) -> None:
    newer = ("nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetTemperatureV")
    lib_dir = build(tmp_path_factory.mktemp("nvml-without-newer"), omit=newer, obj=nvml_object)
    device = profiles.gpu(0, temperature_gpu=63)
    state = tmp_path / "nvml.json"
    profiles.write(state, profiles.state([device]))
    with run_gpu_probe(tmp_path, lib_dir.parent, state) as sidecar:
        text = sidecar.wait_metric("infermeter_gpu_temperature_celsius", 63.0, gpu="0")
    assert value(text, "infermeter_gpu_up", gpu="0") == 1.0
    # v1 memory: reserved counts as used, and there is no reserved series
    assert value(text, "infermeter_gpu_memory_used_bytes", gpu="0") == float(
        device["memory_used"] + device["memory_reserved"]
    )
    assert value(text, "infermeter_gpu_memory_reserved_bytes") is None
