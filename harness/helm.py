"""Run the real helm v4 binary on the chart and hand back parsed manifests.

helm is not a Debian package; `make test` fetches it with deploy/helm/fetch-helm.sh into
.tools/. Tests fail (never skip) when it is missing, saying how to get it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness import yamls

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "infermeter"
SCENARIOS = sorted(CHART.glob("ci/*-values.yaml"))
MONITORING_API = "monitoring.coreos.com/v1"
MONITORING_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}

Manifest = dict[str, Any]


@functools.cache
def helm_binary() -> str:
    """$HELM, then .tools/helm (what `make test` fetches), then helm on PATH; v4 only."""
    candidates = [os.environ.get("HELM"), str(ROOT / ".tools" / "helm"), shutil.which("helm")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            version = subprocess.run(
                [candidate, "version", "--short"], capture_output=True, text=True, check=True
            ).stdout.strip()
            assert version.startswith("v4."), (
                f"{candidate} is helm {version}; the chart is tested with v4"
            )
            return candidate
    raise AssertionError(
        "helm v4 not found: run `deploy/helm/fetch-helm.sh .tools` (make test does) or set HELM"
    )


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def template_args(
    values: Path | None = None,
    sets: tuple[str, ...] = (),
    monitoring: bool = False,
    kube_version: str | None = None,
) -> list[str]:
    args = ["template", "rel", str(CHART), "--namespace", "inference"]
    if values is not None:
        args += ["--values", str(values)]
    for item in sets:
        args += ["--set", item]
    if monitoring:
        args += ["--api-versions", MONITORING_API]
    if kube_version:
        args += ["--kube-version", kube_version]
    return args


@functools.cache
def render(
    values: Path | None = None,
    sets: tuple[str, ...] = (),
    monitoring: bool = False,
    kube_version: str | None = None,
) -> tuple[Manifest, ...]:
    """`helm template` of the chart (cached: the chart does not change during a run)."""
    out = helm(*template_args(values, sets, monitoring, kube_version)).stdout
    return tuple(doc for doc in yamls.load_all(out) if doc)


def template_error(*sets: str) -> str:
    """The error helm prints when it refuses these values (fails if it accepts them)."""
    proc = helm(*template_args(sets=sets), check=False)
    assert proc.returncode != 0, f"helm accepted {sets}"
    return proc.stderr


def one(manifests: tuple[Manifest, ...], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[m['kind'] for m in manifests]}"
    return found[0]


def pod_spec(manifests: tuple[Manifest, ...]) -> dict[str, Any]:
    workload = next(m for m in manifests if m["kind"] in {"Deployment", "DaemonSet"})
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def infermeter_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers = spec.get("initContainers", []) + spec["containers"]
    (container,) = [c for c in containers if c["name"] == "infermeter"]
    found: dict[str, Any] = container
    return found
