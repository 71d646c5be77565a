"""`--dcgm-compat`: dcgm-exporter's names, units and labels, served by the real sidecar
(in-process: harness/inprocess.py).

The expressions of NVIDIA's official dcgm-exporter dashboard (fixture) run against a real
Prometheus scraping infermeter with fake-NVML GPUs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import http_client
from harness.dashboards_live import run_prometheus
from harness.fake_nvml import profiles
from harness.golden import VOLATILE
from harness.inprocess import run_inprocess
from harness.sidecar import samples, stable_exposition, value, wait_for

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).parents[1] / "fixtures"
GOLDEN = FIXTURES / "golden" / "gpu-dcgm.prom"
QUERIES = FIXTURES / "dcgm" / "dashboard-queries.txt"
ARGS = ("--gpu-poll-interval", "0.1", "--dcgm-compat")
ENV = {"NODE_NAME": "gpu-node-a"}


def two_gpus_one_mig() -> list[dict[str, object]]:
    return [
        profiles.gpu(0),
        profiles.gpu(1, mig_devices=[profiles.mig(1, 0), profiles.mig(1, 1)]),
    ]


def write_state(tmp_path: Path, xid: bool = True) -> Path:
    state = tmp_path / "nvml.json"
    events = [{"id": 1, "device": 0, "xid": 79}] if xid else []
    profiles.write(state, profiles.state(two_gpus_one_mig(), xid_events=events))
    return state


def test_dcgm_names_units_labels_golden_and_promtool(
    tmp_path: Path, fake_nvml_dir: Path, update_golden: bool
) -> None:
    state = write_state(tmp_path)
    with run_inprocess(tmp_path, *ARGS, lib_dir=fake_nvml_dir, nvml_state=state, env=ENV) as car:
        text = car.wait_metric("DCGM_FI_DEV_XID_ERRORS", 79.0, gpu="0")
        car.wait_metric("DCGM_FI_DEV_FB_USED", 2048.0, GPU_I_ID="8")
        text = car.wait_metric("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 0.125, gpu="1")
    if update_golden:
        GOLDEN.write_text(stable_exposition(text, VOLATILE))
    assert stable_exposition(text, VOLATILE) == GOLDEN.read_text()

    gpu0 = profiles.gpu(0)
    labels = {
        "gpu": "0",
        "UUID": str(gpu0["uuid"]),
        "device": "nvidia0",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": "gpu-node-a",
        "pci_bus_id": "00000000:17:00.0",
        "DCGM_FI_DRIVER_VERSION": "550.54.15",
    }
    expected = {
        "DCGM_FI_DEV_GPU_UTIL": 10.0,  # %
        "DCGM_FI_DEV_MEM_COPY_UTIL": 5.0,
        "DCGM_FI_DEV_FB_USED": 20 * 1024.0,  # MiB
        "DCGM_FI_DEV_FB_RESERVED": 512.0,
        "DCGM_FI_DEV_FB_FREE": 80 * 1024.0 - 512 - 20 * 1024,
        "DCGM_FI_DEV_GPU_TEMP": 40.0,  # C
        "DCGM_FI_DEV_MEMORY_TEMP": 50.0,
        "DCGM_FI_DEV_POWER_USAGE": 300.0,  # W
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 1_000_000_000.0,  # mJ
        "DCGM_FI_DEV_SM_CLOCK": 1980.0,  # MHz
        "DCGM_FI_DEV_MEM_CLOCK": 2619.0,
        "DCGM_FI_DEV_XID_ERRORS": 79.0,  # the last XID
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 0.0,
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": 0.0,
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 0.0,
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": 0.0,
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 0.0,
        "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0.0,
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": 0.125,  # ratio, from NVML GPM
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": 0.0625,
    }
    for name, want in expected.items():
        assert value(text, name, **labels) == want, name
    # the other GPU, a second reading: values follow the device
    assert value(text, "DCGM_FI_DEV_GPU_UTIL", gpu="1", device="nvidia1") == 20.0
    assert value(text, "DCGM_FI_DEV_XID_ERRORS", gpu="1") == 0.0
    # a MIG device: the parent's UUID and index, its GPU instance id and profile
    mig = {
        "gpu": "1",
        "UUID": str(profiles.gpu(1)["uuid"]),
        "GPU_I_ID": "8",
        "GPU_I_PROFILE": "1g.10gb",
        "modelName": "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
    }
    assert value(text, "DCGM_FI_DEV_FB_USED", **mig) == 2048.0
    # a full GPU has no GPU_I_ID label at all once Prometheus reads it (empty = absent)
    for name, sample_labels in samples(text):
        if name.startswith("DCGM_") and dict(sample_labels)["GPU_I_ID"]:
            assert dict(sample_labels)["GPU_I_PROFILE"], name

    promtool = shutil.which("promtool")
    assert promtool
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    # dcgm-exporter's own names break two conventions on purpose (see README): camelCase labels
    # and untyped counters without _total are all promtool may say, and only about DCGM names.
    problems = [
        line
        for line in lint.stdout.decode().splitlines() + lint.stderr.decode().splitlines()
        if line.strip()
    ]
    assert problems, "promtool verdict changed: update the README's note on DCGM names"
    for line in problems:
        assert line.startswith("DCGM_FI_"), line


def test_off_by_default(tmp_path: Path, fake_nvml_dir: Path) -> None:
    state = write_state(tmp_path, xid=False)
    with run_inprocess(
        tmp_path, "--gpu-poll-interval", "0.1", lib_dir=fake_nvml_dir, nvml_state=state
    ) as car:
        text = car.wait_metric("infermeter_gpu_up", 1.0, gpu="1")
    assert not [name for name, _ in samples(text) if name.startswith("DCGM_")]


def _dashboard_queries() -> list[str]:
    lines = QUERIES.read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def _run(prometheus: str, query: str) -> list[object]:
    """A dashboard expression as Grafana runs it with every variable on "All"."""
    query = query.replace("$Hostname", ".*").replace("$gpu", ".*")
    found = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
    if found:
        selector, label = found.groups()
        response = http_client.get(
            f"{prometheus}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=5
        )
    else:
        response = http_client.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    data = body["data"]
    return list(data if found else data["result"])


def test_official_dcgm_dashboard_queries_return_data(tmp_path: Path, fake_nvml_dir: Path) -> None:
    queries = _dashboard_queries()
    assert len(queries) == 10
    state = write_state(tmp_path)
    with run_inprocess(tmp_path, *ARGS, lib_dir=fake_nvml_dir, nvml_state=state, env=ENV) as car:
        car.wait_metric("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.125, gpu="0")
        with run_prometheus(tmp_path, {"gpu-node-a": car}) as prometheus:
            for query in queries:
                wait_for(lambda q=query: _run(prometheus, q), timeout=30, what=query)
            hosts = _run(prometheus, "label_values(DCGM_FI_DEV_FB_FREE, Hostname)")
            gpus = _run(prometheus, 'label_values(DCGM_FI_DEV_FB_FREE{Hostname=~".*"}, gpu)')
            tensor = _run(prometheus, queries[6])
    assert hosts == ["gpu-node-a"]
    assert gpus == ["0", "1"]
    # the tensor panel: one series per GPU (MIG devices have no GPM figures of their own)
    assert len(tensor) == 2
