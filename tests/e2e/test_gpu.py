"""The real sidecar reading GPUs through real nvidia-ml-py and the fake NVML.

In-process (harness/inprocess.py: the fake library loaded into the test process once, the
state file switched per sidecar), but for the tests whose point needs a process: another
library build (the old driver) or none at all."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from harness.fake_nvml import profiles
from harness.golden import GOLDEN, VOLATILE
from harness.inprocess import run_inprocess
from harness.sidecar import run_sidecar, samples, stable_exposition, value
from infermeter import metrics as m

pytestmark = pytest.mark.e2e
FAST = ("--gpu-poll-interval", "0.1")


def nvml_state(tmp_path: Path, devices: list[dict[str, object]], **top: object) -> Path:
    path = tmp_path / "nvml.json"
    profiles.write(path, profiles.state(devices, **top))
    return path


def stable(text: str) -> str:
    return stable_exposition(text, VOLATILE)


def test_eight_gpus_match_golden_and_pass_promtool(
    tmp_path: Path, fake_nvml_dir: Path, update_golden: bool
) -> None:
    state = nvml_state(tmp_path, [profiles.gpu(i) for i in range(8)])
    with run_inprocess(tmp_path, *FAST, lib_dir=fake_nvml_dir, nvml_state=state) as sidecar:
        # GPM figures need two polls: wait for the last GPU's
        text = sidecar.wait_metric("infermeter_gpu_tensor_active_ratio", 0.5, gpu="7")
    golden = GOLDEN / "gpu-8.prom"
    if update_golden:
        golden.write_text(stable(text))
    assert stable(text) == golden.read_text()

    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make test` (Debian package prometheus)"
    lint = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == b""
    assert lint.stderr.strip() == b""


def test_every_gpu_metric_in_the_catalogue_is_exported_for_a_full_gpu(
    tmp_path: Path, fake_nvml_dir: Path
) -> None:
    state = nvml_state(tmp_path, [profiles.gpu(0)])
    with run_inprocess(tmp_path, *FAST, lib_dir=fake_nvml_dir, nvml_state=state) as sidecar:
        # GPM figures need two polls, and the XID thread counts an event without waiting
        # for one: wait for GPM first (seen: the XID counted between the first two polls)
        sidecar.wait_metric("infermeter_gpu_tensor_active_ratio", 0.0625, gpu="0")
        state_data = profiles.state(
            [profiles.gpu(0)], xid_events=[{"id": 1, "device": 0, "xid": 48}]
        )
        profiles.write(state, state_data)
        text = sidecar.wait_metric("infermeter_gpu_xid_errors_total", 1.0, xid="48")
    exported = {name for name, _ in samples(text)}
    for spec in m.CATALOGUE:
        if spec.group != "gpu":
            continue
        assert spec.name in exported, f"{spec.name} missing for a GPU that supports everything"


def test_no_gpus(tmp_path: Path, fake_nvml_dir: Path) -> None:
    state = nvml_state(tmp_path, [])
    with run_inprocess(tmp_path, *FAST, lib_dir=fake_nvml_dir, nvml_state=state) as sidecar:
        text = sidecar.wait_metric("infermeter_nvml_up", 1.0)
    assert value(text, "infermeter_collector_success", collector="gpu") == 1.0
    assert not [name for name, _ in samples(text) if name.startswith("infermeter_gpu_")]


def test_unsupported_fields_are_absent_not_zero(tmp_path: Path, fake_nvml_dir: Path) -> None:
    device = profiles.gpu(0)
    for key in (
        "fan_speed",
        "temperature_memory",
        "ecc_corrected_volatile",
        "ecc_uncorrected_volatile",
        "remapped_rows",
        "pcie_replay",
    ):
        del device[key]
    state = nvml_state(tmp_path, [device])
    with run_inprocess(tmp_path, *FAST, lib_dir=fake_nvml_dir, nvml_state=state) as sidecar:
        text = sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="0")
        text = sidecar.metrics()  # a second poll after the fields were dropped
    for gone in (
        "infermeter_gpu_fan_speed_ratio",
        "infermeter_gpu_memory_temperature_celsius",
        "infermeter_gpu_ecc_errors_total",
        "infermeter_gpu_remapped_rows_total",
        "infermeter_gpu_pcie_replays_total",
    ):
        assert value(text, gone) is None, gone
    assert value(text, "infermeter_gpu_temperature_celsius", gpu="0") == 40.0
    assert value(text, "infermeter_gpu_power_watts", gpu="0") == 300.0


def test_gpu_lost_mid_run_and_back(tmp_path: Path, fake_nvml_dir: Path) -> None:
    devices = [profiles.gpu(0), profiles.gpu(1)]
    state = nvml_state(tmp_path, devices)
    with run_inprocess(tmp_path, *FAST, lib_dir=fake_nvml_dir, nvml_state=state) as sidecar:
        sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="1")
        devices[1]["fault"] = "GPU_IS_LOST"
        profiles.write(state, profiles.state(devices))
        text = sidecar.wait_metric("infermeter_gpu_up", 0.0, gpu="1")
        assert value(text, "infermeter_gpu_power_watts", gpu="1") is None
        assert value(text, "infermeter_gpu_power_watts", gpu="0") == 300.0
        assert value(text, "infermeter_gpu_up", gpu="0") == 1.0
        assert value(text, "infermeter_nvml_up") == 1.0

        devices[1]["fault"] = None
        devices[1]["power_usage_mw"] = 123_000
        profiles.write(state, profiles.state(devices))
        text = sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="1")
        assert value(text, "infermeter_gpu_power_watts", gpu="1") == 123.0
        assert "GPU lost" in sidecar.log()
        assert "GPU back" in sidecar.log()


def test_gpu_failing_with_unknown_error_is_down(tmp_path: Path, fake_nvml_dir: Path) -> None:
    state = nvml_state(tmp_path, [profiles.gpu(0, fault="UNKNOWN"), profiles.gpu(1)])
    with run_inprocess(tmp_path, *FAST, lib_dir=fake_nvml_dir, nvml_state=state) as sidecar:
        text = sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="1")
    assert value(text, "infermeter_gpu_up", gpu="0") == 0.0
    assert value(text, "infermeter_gpu_temperature_celsius", gpu="0") is None


def test_driver_not_loaded_then_loaded(tmp_path: Path, fake_nvml_dir: Path) -> None:
    state = nvml_state(tmp_path, [profiles.gpu(0)], init_error="DRIVER_NOT_LOADED")
    with run_inprocess(tmp_path, *FAST, lib_dir=fake_nvml_dir, nvml_state=state) as sidecar:
        text = sidecar.wait_metric("infermeter_nvml_up", 0.0)
        assert value(text, "infermeter_process_up", process="sidecar") == 1.0
        assert sidecar.get("/readyz").status_code == 200
        profiles.write(state, profiles.state([profiles.gpu(0)]))
        text = sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="0")
        assert value(text, "infermeter_nvml_up") == 1.0
        assert "NVML initialised" in sidecar.log()


def test_library_missing_serves_everything_else_and_logs_once(tmp_path: Path) -> None:
    with run_sidecar(tmp_path, *FAST) as sidecar:
        text = sidecar.wait_metric("infermeter_nvml_up", 0.0)
        # let several retries pass (backoff 0.1, 0.2, 0.4, 0.8 s)
        sidecar.wait_metric("infermeter_collector_success", 0.0, collector="gpu")
        time.sleep(1.6)
        text = sidecar.metrics()
    assert value(text, "infermeter_process_up", process="sidecar") == 1.0
    assert value(text, "infermeter_build_info") == 1.0
    assert sidecar.log().count("NVML unavailable") == 1
    assert "library_not_found" in sidecar.log()


def test_xid_events_are_counted(tmp_path: Path, fake_nvml_dir: Path) -> None:
    devices = [profiles.gpu(0), profiles.gpu(1)]
    state = nvml_state(tmp_path, devices)
    uuid1 = devices[1]["uuid"]
    with run_inprocess(tmp_path, *FAST, lib_dir=fake_nvml_dir, nvml_state=state) as sidecar:
        sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="1")
        events = [{"id": 1, "device": 1, "xid": 79}]
        profiles.write(state, profiles.state(devices, xid_events=events))
        sidecar.wait_metric("infermeter_gpu_xid_errors_total", 1.0, gpu="1", xid="79")
        events += [{"id": 2, "device": 1, "xid": 79}, {"id": 3, "device": 0, "xid": 13}]
        profiles.write(state, profiles.state(devices, xid_events=events))
        text = sidecar.wait_metric("infermeter_gpu_xid_errors_total", 2.0, gpu="1", xid="79")
        text = sidecar.wait_metric("infermeter_gpu_xid_errors_total", 1.0, gpu="0", xid="13")
    assert value(text, "infermeter_gpu_xid_errors_total", gpu="1", uuid=str(uuid1)) == 2.0
    assert "GPU XID error" in sidecar.log()


def test_mig_devices_are_their_own_devices(tmp_path: Path, fake_nvml_dir: Path) -> None:
    parent = profiles.gpu(0, mig_devices=[profiles.mig(0, 0), profiles.mig(0, 1)])
    state = nvml_state(tmp_path, [parent])
    with run_inprocess(tmp_path, *FAST, lib_dir=fake_nvml_dir, nvml_state=state) as sidecar:
        mig_uuid = profiles.mig(0, 1)["uuid"]
        text = sidecar.wait_metric("infermeter_gpu_up", 1.0, uuid=str(mig_uuid))
    assert value(text, "infermeter_gpu_memory_used_bytes", uuid=str(mig_uuid), gpu="0") == float(
        2 * profiles.GiB
    )
    assert (
        value(text, "infermeter_gpu_info", uuid=str(mig_uuid), parent_uuid=str(parent["uuid"])) == 1
    )
    # NVML offers no utilization for a MIG device: absent, not 0
    assert value(text, "infermeter_gpu_utilization_ratio", uuid=str(mig_uuid)) is None
    assert value(text, "infermeter_gpu_utilization_ratio", uuid=str(parent["uuid"])) == 0.1


def test_old_driver_falls_back_to_v1_apis(tmp_path: Path, old_driver_nvml_dir: Path) -> None:
    state = nvml_state(tmp_path, [profiles.gpu(1)])
    with run_sidecar(tmp_path, *FAST, lib_dir=old_driver_nvml_dir, nvml_state=state) as sidecar:
        text = sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="0")
    device = profiles.gpu(1)
    assert value(text, "infermeter_gpu_memory_reserved_bytes") is None
    # v1 counts reserved memory as used
    assert value(text, "infermeter_gpu_memory_used_bytes") == float(
        device["memory_used"] + device["memory_reserved"]
    )
    assert value(text, "infermeter_gpu_clock_event_active", reason="sw_power_cap") == 1.0
    assert value(text, "infermeter_gpu_clock_event_active", reason="gpu_idle") == 0.0


def test_gpu_selection_by_index_and_uuid(tmp_path: Path, fake_nvml_dir: Path) -> None:
    devices = [profiles.gpu(i) for i in range(4)]
    state = nvml_state(tmp_path, devices)
    selection = f"1,{devices[3]['uuid']}"
    with run_inprocess(
        tmp_path, *FAST, "--gpus", selection, lib_dir=fake_nvml_dir, nvml_state=state
    ) as sidecar:
        text = sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="3")
    up = {dict(labels)["gpu"] for (name, labels) in samples(text) if name == "infermeter_gpu_up"}
    assert up == {"1", "3"}


def test_openmetrics_negotiation_and_parse(tmp_path: Path, fake_nvml_dir: Path) -> None:
    state = nvml_state(tmp_path, [profiles.gpu(0)])
    with run_inprocess(tmp_path, *FAST, lib_dir=fake_nvml_dir, nvml_state=state) as sidecar:
        sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="0")
        response = sidecar.get("/metrics", Accept="application/openmetrics-text; version=1.0.0")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["infermeter_gpu_energy_joules"].type == "counter"
    energy = families["infermeter_gpu_energy_joules"].samples[0]
    assert energy.name == "infermeter_gpu_energy_joules_total"
    assert energy.value == pytest.approx(1_000_000.0)
