"""GPUs attributed to pods: the real sidecar (in-process: harness/inprocess.py) asks a real
gRPC server on a Unix socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from harness.fake_nvml import profiles
from harness.golden import GOLDEN, VOLATILE
from harness.inprocess import run_inprocess
from harness.kubelet_server import FakeKubelet, fake_kubelet
from harness.sidecar import samples, stable_exposition, value, wait_for

pytestmark = pytest.mark.e2e
GPU0 = str(profiles.gpu(0)["uuid"])
GPU1 = str(profiles.gpu(1)["uuid"])
MIG0 = str(profiles.mig(1, 0)["uuid"])
MIG1 = str(profiles.mig(1, 1)["uuid"])
GPU = "nvidia.com/gpu"


def args(sock: Path, *more: str) -> tuple[str, ...]:
    return (
        "--gpu-poll-interval",
        "0.1",
        "--kubelet-pod-resources",
        str(sock),
        "--kubelet-pod-resources-interval",
        "0.2",
        *more,
    )


def nvml(tmp_path: Path) -> Path:
    state = tmp_path / "nvml.json"
    devices = [
        profiles.gpu(0),
        profiles.gpu(1, mig_devices=[profiles.mig(1, 0), profiles.mig(1, 1)]),
        profiles.gpu(2),
    ]
    profiles.write(state, profiles.state(devices))
    return state


def pod_of(text: str, name: str, uuid: str) -> tuple[str, str, str] | None:
    for sample_name, labels in samples(text):
        found = dict(labels)
        if sample_name == name and found["uuid"] == uuid:
            return found.get("namespace", ""), found.get("pod", ""), found.get("container", "")
    return None


def sock_path(tmp_path: Path) -> Path:
    # AF_UNIX paths are short (108 bytes); pytest's tmp_path can be longer
    short = Path(f"/tmp/im16-{os.getpid()}-{abs(hash(tmp_path)) % 10**8}.sock")
    short.unlink(missing_ok=True)
    return short


def test_pods_come_and_go_mig_and_several_containers(tmp_path: Path, fake_nvml_dir: Path) -> None:
    sock = sock_path(tmp_path)
    kubelet = FakeKubelet(
        pods=[
            ("ml", "train-0", {"trainer": [(GPU, [GPU0])], "logger": []}),
            (
                "ml",
                "infer-0",
                {
                    "vllm": [("nvidia.com/mig-1g.10gb", [MIG0])],
                    "embed": [("nvidia.com/mig-1g.10gb", [MIG1])],
                },
            ),
        ]
    )
    power = "infermeter_gpu_power_watts"
    with (
        fake_kubelet(sock, kubelet),
        run_inprocess(
            tmp_path, *args(sock, "--dcgm-compat"), lib_dir=fake_nvml_dir, nvml_state=nvml(tmp_path)
        ) as car,
    ):
        text = car.wait_metric(power, 300.0, gpu="0", pod="train-0")
        text = car.wait_metric(
            "infermeter_gpu_memory_used_bytes", 2.0 * profiles.GiB, container="embed"
        )
        assert pod_of(text, power, GPU0) == ("ml", "train-0", "trainer")
        assert pod_of(text, "infermeter_gpu_up", MIG0) == ("ml", "infer-0", "vllm")
        assert pod_of(text, "infermeter_gpu_up", MIG1) == ("ml", "infer-0", "embed")
        assert pod_of(text, power, GPU1) == ("", "", "")  # the MIG parent: nobody holds it whole
        assert pod_of(text, power, str(profiles.gpu(2)["uuid"])) == ("", "", "")
        assert value(text, "infermeter_gpu_pod_info", uuid=GPU0, container="trainer") == 1.0
        assert value(text, "infermeter_collector_success", collector="kubelet") == 1.0
        # DCGM names carry the same labels; MIG devices by their parent UUID + GPU_I_ID
        assert value(text, "DCGM_FI_DEV_POWER_USAGE", gpu="0", pod="train-0") == 300.0
        assert value(text, "DCGM_FI_DEV_FB_USED", GPU_I_ID="8", container="embed") == 2048.0

        # train-0 ends, serve-0 starts on GPU 0 and GPU 2
        with kubelet.lock:
            kubelet.pods = [
                ("prod", "serve-0", {"server": [(GPU, [GPU0, str(profiles.gpu(2)["uuid"])])]})
            ]
        text = car.wait_metric(power, 300.0, gpu="0", pod="serve-0")
        assert pod_of(text, power, str(profiles.gpu(2)["uuid"])) == ("prod", "serve-0", "server")
        assert pod_of(text, "infermeter_gpu_up", MIG0) == ("", "", "")
        assert value(text, "infermeter_gpu_pod_info", pod="train-0") is None
    assert "GPU series without pod labels" not in car.log()


def test_attributed_exposition_matches_golden_and_passes_promtool(
    tmp_path: Path, fake_nvml_dir: Path, update_golden: bool
) -> None:
    sock = sock_path(tmp_path)
    gpu2 = str(profiles.gpu(2)["uuid"])
    kubelet = FakeKubelet(
        pods=[
            ("ml", "train-0", {"trainer": [(GPU, [GPU0])]}),
            ("ml", "infer-0", {"embed": [("nvidia.com/mig-1g.10gb", [MIG1])]}),
            ("x", "share-0", {"c": [(GPU, [f"{gpu2}::0"])]}),
            ("x", "share-1", {"c": [(GPU, [f"{gpu2}::1"])]}),
        ]
    )
    with (
        fake_kubelet(sock, kubelet),
        run_inprocess(
            tmp_path, *args(sock), lib_dir=fake_nvml_dir, nvml_state=nvml(tmp_path)
        ) as car,
    ):
        text = car.wait_metric("infermeter_gpu_pod_info", 1.0, uuid=gpu2, pod="share-1")
        car.wait_metric("infermeter_gpu_up", 1.0, uuid=MIG1, pod="infer-0")
        text = car.wait_metric("infermeter_gpu_tensor_active_ratio", 0.1875, gpu="2")
    golden = GOLDEN / "gpu-pods.prom"
    if update_golden:
        golden.write_text(stable_exposition(text, VOLATILE))
    assert stable_exposition(text, VOLATILE) == golden.read_text()
    promtool = shutil.which("promtool")
    assert promtool
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_a_gpu_shared_by_time_slicing_is_not_given_to_one_pod(
    tmp_path: Path, fake_nvml_dir: Path
) -> None:
    sock = sock_path(tmp_path)
    kubelet = FakeKubelet(
        pods=[
            ("a", "one", {"c": [(GPU, [f"{GPU0}::0"])]}),
            ("b", "two", {"c": [(GPU, [f"{GPU0}::1"])]}),
        ]
    )
    with (
        fake_kubelet(sock, kubelet),
        run_inprocess(
            tmp_path, *args(sock), lib_dir=fake_nvml_dir, nvml_state=nvml(tmp_path)
        ) as car,
    ):
        text = car.wait_metric("infermeter_gpu_pod_info", 1.0, uuid=GPU0, pod="two")
    assert value(text, "infermeter_gpu_pod_info", uuid=GPU0, pod="one") == 1.0
    assert pod_of(text, "infermeter_gpu_power_watts", GPU0) == ("", "", "")


def test_socket_absent_then_served(tmp_path: Path, fake_nvml_dir: Path) -> None:
    sock = sock_path(tmp_path)
    with run_inprocess(
        tmp_path, *args(sock), lib_dir=fake_nvml_dir, nvml_state=nvml(tmp_path)
    ) as car:
        text = car.wait_metric("infermeter_collector_success", 0.0, collector="kubelet")
        text = car.wait_metric("infermeter_gpu_up", 1.0, gpu="0")
        assert pod_of(text, "infermeter_gpu_up", GPU0) == ("", "", "")
        assert value(text, "infermeter_collector_success", collector="gpu") == 1.0
        wait_for(lambda: car.log().count("GPU series without pod labels") == 1, what="log")
        with fake_kubelet(sock, FakeKubelet(pods=[("ml", "p", {"c": [(GPU, [GPU0])]})])):
            car.wait_metric("infermeter_gpu_up", 1.0, gpu="0", pod="p")
            text = car.metrics()
            log = car.log()
        assert value(text, "infermeter_collector_success", collector="kubelet") == 1.0
        assert car.exit_code() is None
    assert log.count("GPU series without pod labels") == 1, log  # logged once, not per poll
    assert "kubelet pod resources back" in log


def test_slow_then_broken_kubelet(tmp_path: Path, fake_nvml_dir: Path) -> None:
    sock = sock_path(tmp_path)
    kubelet = FakeKubelet(pods=[("ml", "p", {"c": [(GPU, [GPU0])]})])
    with (
        fake_kubelet(sock, kubelet),
        run_inprocess(
            tmp_path, *args(sock), lib_dir=fake_nvml_dir, nvml_state=nvml(tmp_path)
        ) as car,
    ):
        car.wait_metric("infermeter_gpu_up", 1.0, gpu="0", pod="p")
        with kubelet.lock:
            kubelet.delay = 1.0  # longer than the call's timeout (the 0.2 s interval)
        text = car.wait_metric("infermeter_collector_success", 0.0, collector="kubelet")
        text = car.wait_metric("infermeter_gpu_up", 1.0, gpu="0", pod="")
        # a scrape never waits for the kubelet
        for _ in range(5):
            assert car.get("/metrics").elapsed.total_seconds() < 0.5
        with kubelet.lock:
            kubelet.delay, kubelet.garbage = 0.0, b"\x0a\xff\xff\xff"
        car.wait_metric("infermeter_collector_success", 0.0, collector="kubelet")
        with kubelet.lock:
            kubelet.garbage = None
        text = car.wait_metric("infermeter_gpu_up", 1.0, gpu="0", pod="p")
    assert value(text, "infermeter_collector_success", collector="kubelet") == 1.0


def unattributed(tmp_path: Path, sock: Path, lib_dir: Path) -> str:
    """Run the sidecar against a kubelet socket that cannot answer; return its log."""
    with run_inprocess(tmp_path, *args(sock), lib_dir=lib_dir, nvml_state=nvml(tmp_path)) as car:
        car.wait_metric("infermeter_collector_success", 0.0, collector="kubelet")
        text = car.wait_metric("infermeter_gpu_up", 1.0, gpu="0")
    assert pod_of(text, "infermeter_gpu_up", GPU0) == ("", "", "")
    assert value(text, "infermeter_collector_success", collector="gpu") == 1.0
    return car.log()


def test_not_a_grpc_server(tmp_path: Path, fake_nvml_dir: Path) -> None:
    sock = sock_path(tmp_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    listener.listen()

    def answer_http1() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer_http1, daemon=True).start()
    try:
        unattributed(tmp_path, sock, fake_nvml_dir)
    finally:
        listener.close()


def test_stale_socket_nobody_listens(tmp_path: Path, fake_nvml_dir: Path) -> None:
    """What a kubelet that died leaves behind: the socket file, nobody accepting."""
    sock = sock_path(tmp_path)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock))
    dead.close()
    assert sock.exists()
    try:
        log = unattributed(tmp_path, sock, fake_nvml_dir)
    finally:
        sock.unlink(missing_ok=True)
    assert "connect" in log  # the reason names the refused connection


def test_off_and_default_socket_absent(tmp_path: Path, fake_nvml_dir: Path) -> None:
    state = nvml(tmp_path)
    for extra in (("--kubelet-pod-resources", "off"), ()):
        with run_inprocess(
            tmp_path, "--gpu-poll-interval", "0.1", *extra, lib_dir=fake_nvml_dir, nvml_state=state
        ) as car:
            text = car.wait_metric("infermeter_gpu_up", 1.0, gpu="0")
        assert value(text, "infermeter_collector_success", collector="kubelet") is None
        assert 'pod="' not in text
