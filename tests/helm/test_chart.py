"""The Helm chart, rendered by the real helm and checked against what Kubernetes accepts.

No cluster here: every ci/*-values.yaml scenario is linted, rendered with and without the
prometheus-operator API, validated against the Kubernetes JSON schemas (kubernetes-validate,
strict: unknown fields fail) of the oldest and newest supported versions, and the monitoring
objects against the CRDs' own openAPIV3 schemas (tests/helm/crds: prometheus-operator v0.93.0).
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

import infermeter
from harness import yamls
from harness.helm import (
    CHART,
    MONITORING_KINDS,
    ROOT,
    SCENARIOS,
    Manifest,
    helm,
    infermeter_container,
    one,
    pod_spec,
    render,
    template_error,
)

CRDS = Path(__file__).parent / "crds"  # prometheus-operator v0.93.0 CRDs, vendored (Apache-2.0)
OLDEST_NATIVE, NEWEST = "1.29.0", kubernetes_validate.utils.latest_version()
SCENARIO_IDS = [p.name.removesuffix("-values.yaml") for p in SCENARIOS]


def test_scenarios_cover_every_mode() -> None:
    modes = {yamls.load(p.read_text())["mode"] for p in SCENARIOS}
    assert modes == {"sidecar", "daemonset", "none"}
    assert {"sidecar-native", "sidecar-classic", "daemonset", "monitoring"} <= set(SCENARIO_IDS)


@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=["defaults", *SCENARIO_IDS])
def test_helm_lint_strict(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    out = helm(*args).stdout
    assert "0 chart(s) failed" in out


def strict(schema: Any) -> Any:
    """A CRD schema that, like kubectl's field validation, rejects unknown fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    """Each CRD is parsed (a large YAML) and its validator built once per run."""
    return jsonschema.Draft7Validator(crd_schema(kind))


def crd_schema(kind: str) -> dict[str, Any]:
    crd = yamls.load((CRDS / f"monitoring.coreos.com_{kind.lower()}s.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = strict(version["schema"]["openAPIV3Schema"])
    return schema


def validate(manifest: Manifest, kube_version: str) -> None:
    name = f"{manifest['kind']}/{manifest['metadata']['name']}"
    if manifest["kind"] in MONITORING_KINDS:
        errors = list(crd_validator(manifest["kind"]).iter_errors(manifest))
        assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
        return
    try:
        kubernetes_validate.validate(manifest, kube_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = f"{name} (Kubernetes {kube_version}): {list(exc.path)}"
        raise AssertionError(f"{where}: {exc.message}") from None


@pytest.mark.parametrize("kube_version", [OLDEST_NATIVE, NEWEST])
@pytest.mark.parametrize("monitoring", [False, True], ids=["no-monitoring-api", "monitoring-api"])
@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_scenario_is_valid_kubernetes(values: Path, monitoring: bool, kube_version: str) -> None:
    manifests = render(values, monitoring=monitoring, kube_version=kube_version)
    assert manifests
    for manifest in manifests:
        validate(manifest, kube_version)


def test_crd_validation_catches_a_wrong_field() -> None:
    """Guard for the check above: the strict CRD schema really rejects a misspelt field."""
    monitor = copy.deepcopy(one(render(monitoring=True), "PodMonitor"))
    monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")
    with pytest.raises(AssertionError, match="podMetricEndpoints"):
        validate(monitor, NEWEST)


def expected_monitoring(values: dict[str, Any]) -> set[str]:
    kinds = set()
    monitor = values.get("monitor", {})
    if monitor.get("enabled", True):
        kinds.add(monitor.get("kind", "PodMonitor"))
    if values.get("prometheusRule", {}).get("enabled", False):
        kinds.add("PrometheusRule")
    return kinds


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_monitoring_objects_only_when_the_api_exists(values: Path) -> None:
    without = {m["kind"] for m in render(values)}
    assert not without & MONITORING_KINDS
    with_api = render(values, monitoring=True)
    config = yamls.load(values.read_text())
    assert {m["kind"] for m in with_api} & MONITORING_KINDS == expected_monitoring(config)
    for manifest in with_api:
        if manifest["kind"] in MONITORING_KINDS:
            section = "prometheusRule" if manifest["kind"] == "PrometheusRule" else "monitor"
            extra = config.get(section, {}).get("additionalLabels", {})
            assert extra.items() <= manifest["metadata"]["labels"].items()


def test_pod_monitor_scrapes_the_metrics_port_of_this_release() -> None:
    manifests = render(monitoring=True)
    monitor = one(manifests, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for p in infermeter_container(pod_spec(manifests))["ports"]}
    assert endpoint["port"] in ports


def test_service_monitor_scrapes_the_service_metrics_port() -> None:
    manifests = render(CHART / "ci" / "monitoring-values.yaml", monitoring=True)
    (endpoint,) = one(manifests, "ServiceMonitor")["spec"]["endpoints"]
    service = one(manifests, "Service")
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["targetPort"] == "metrics"


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_only_the_server_requests_a_gpu(values: Path) -> None:
    for manifest in render(values, monitoring=True):
        if manifest["kind"] not in {"Deployment", "DaemonSet", "Pod"}:
            continue
        spec = (
            manifest["spec"] if manifest["kind"] == "Pod" else manifest["spec"]["template"]["spec"]
        )
        for container in all_containers(spec):
            resources = container.get("resources", {})
            claims = {k for part in resources.values() if isinstance(part, dict) for k in part}
            if container["name"] == "server":
                assert "nvidia.com/gpu" in resources["limits"]
            else:
                assert "nvidia.com/gpu" not in claims, f"{container['name']} requests a GPU"


def test_native_sidecar_is_an_init_container_that_always_restarts() -> None:
    spec = pod_spec(render())
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "infermeter"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"  # the server waits for it
    assert [c["name"] for c in spec["containers"]] == ["server"]
    assert "lifecycle" not in sidecar  # it is stopped after the server: no preStop sleep needed
    assert spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]


def test_classic_sidecar_is_a_second_container() -> None:
    spec = pod_spec(render(CHART / "ci" / "sidecar-classic-values.yaml"))
    assert "initContainers" not in spec
    sidecar = infermeter_container(spec)
    assert "restartPolicy" not in sidecar
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert "--upstream=http://127.0.0.1:8080" in sidecar["args"]  # the TGI server's port


def test_bundled_server_defaults_suit_vllm() -> None:
    spec = pod_spec(render())
    (server,) = spec["containers"]
    assert server["image"].startswith("vllm/vllm-openai:")
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["shareProcessNamespace"] is True
    assert "--watch-process=vllm" in infermeter_container(spec)["args"]


@pytest.mark.parametrize(
    "values", [None, CHART / "ci" / "daemonset-values.yaml"], ids=["sidecar", "daemonset"]
)
def test_secure_defaults_and_probes(values: Path | None) -> None:
    spec = pod_spec(render(values))
    container = infermeter_container(spec)
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert isinstance(security["runAsUser"], int)
    assert security["runAsUser"] > 0
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]


def flag(args: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) <= 1
    return values[0] if values else None


@pytest.mark.parametrize(
    ("sets", "grace"),
    [((), 50), (("sidecar.drainTimeout=120",), 140), (("terminationGracePeriodSeconds=300",), 300)],
)
def test_grace_period_outlasts_the_drain(sets: tuple[str, ...], grace: int) -> None:
    spec = pod_spec(render(sets=sets))
    drain = float(flag(infermeter_container(spec)["args"], "drain-timeout") or "nan")
    assert spec["terminationGracePeriodSeconds"] == grace
    assert spec["terminationGracePeriodSeconds"] > drain + 5  # + the preStop sleep


@pytest.mark.parametrize(("value", "expected"), [(None, "1"), ("4", "4"), ("auto", "auto")])
def test_workers_reach_the_flag_and_the_startup_probe_waits_for_them(
    value: str | None, expected: str
) -> None:
    sets = () if value is None else (f"sidecar.workers={value}",)
    container = infermeter_container(pod_spec(render(sets=sets)))
    assert flag(container["args"], "workers") == expected
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"


def test_daemonset_has_no_proxy() -> None:
    manifests = render(CHART / "ci" / "daemonset-values.yaml")
    spec = pod_spec(manifests)
    container = infermeter_container(spec)
    assert flag(container["args"], "upstream") is None
    assert flag(container["args"], "listen") is None
    assert [p["name"] for p in container["ports"]] == ["metrics"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in container["env"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["runtimeClassName"] == "nvidia"
    assert "shareProcessNamespace" not in spec
    service = one(manifests, "Service")
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]


def test_daemonset_attributes_gpus_to_pods_through_a_read_only_mount() -> None:
    manifests = render(CHART / "ci" / "daemonset-attribution-values.yaml", monitoring=True)
    spec = pod_spec(manifests)
    container = infermeter_container(spec)
    volume = next(v for v in spec["volumes"] if v["name"] == "pod-resources")
    assert volume["hostPath"] == {"path": "/var/lib/kubelet/pod-resources", "type": "Directory"}
    assert container["volumeMounts"] == [
        {"name": "pod-resources", "mountPath": "/var/lib/kubelet/pod-resources", "readOnly": True}
    ]
    args = container["args"]
    assert flag(args, "kubelet-pod-resources") == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert flag(args, "kubelet-pod-resources-interval") == "10"
    assert "--dcgm-compat" in args
    node_name = {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    assert node_name in container["env"]
    # the socket is root's (0755): UID 0, but nothing else a root container could have
    security = container["securityContext"]
    assert security["runAsUser"] == 0
    assert security["runAsNonRoot"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security
    assert one(manifests, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True


@pytest.mark.parametrize(
    ("values", "sets"),
    [
        (CHART / "ci" / "daemonset-values.yaml", ()),
        (None, ("podAttribution.enabled=true",)),  # mode sidecar: never mounts the host
        (
            CHART / "ci" / "daemonset-values.yaml",
            ("sidecar.gpu.metrics=false", "podAttribution.enabled=true"),
        ),
    ],
    ids=["daemonset-default", "sidecar", "no-gpu-metrics"],
)
def test_no_host_mount_and_no_root_without_pod_attribution(
    values: Path | None, sets: tuple[str, ...]
) -> None:
    spec = pod_spec(render(values, sets))
    container = infermeter_container(spec)
    assert "pod-resources" not in {v["name"] for v in spec.get("volumes", [])}
    assert "volumeMounts" not in container or all(
        m["name"] != "pod-resources" for m in container["volumeMounts"]
    )
    assert container["securityContext"]["runAsNonRoot"] is True
    # the sidecar's pod has no kubelet socket, so the default finds none; the DaemonSet says off
    off = "off" if spec.get("nodeSelector") else None
    assert flag(container["args"], "kubelet-pod-resources") == off
    assert "--dcgm-compat" not in container["args"]


def test_mode_none_renders_no_workload() -> None:
    kinds = {m["kind"] for m in render(CHART / "ci" / "none-values.yaml", monitoring=True)}
    assert kinds == {"PodMonitor", "PrometheusRule", "ConfigMap"}


def test_helm_test_pod_fetches_metrics_through_the_service() -> None:
    manifests = render()
    pod = one(manifests, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = one(manifests, "Service")
    metrics_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "metrics")
    script = pod["spec"]["containers"][0]["command"][-1]
    assert f"http://{service['metadata']['name']}:{metrics_port}/metrics" in script
    assert "infermeter_build_info" in script
    assert pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mode=sidecars", "at '/mode': value must be one of 'sidecar', 'daemonset', 'none'"),
        (
            r"sidecar.resources.limits.nvidia\.com/gpu=1",
            "at '/sidecar/resources/limits/nvidia.com~1gpu'",
        ),
        ("sidecar.drainTimeout=0", "at '/sidecar/drainTimeout': exclusiveMinimum"),
        ("sidecar.workers=0", "at '/sidecar/workers'"),
        ("sidecar.workers=many", "at '/sidecar/workers'"),
        ("sidecar.upstrem=http://x", "at '/sidecar': additional properties 'upstrem' not allowed"),
        ("sidecar.upstream=ftp://x", "at '/sidecar/upstream': 'ftp://x' does not match"),
        (
            "sidecar.ports.proxy.containerPort=70000",
            "at '/sidecar/ports/proxy/containerPort': maximum",
        ),
        (
            "monitor.kind=Probe",
            "at '/monitor/kind': value must be one of 'PodMonitor', 'ServiceMonitor'",
        ),
        ("monitor.interval=5 minutes", "at '/monitor/interval'"),
        ("sidecar.extraArgs[0]=slo-ttft=1", "at '/sidecar/extraArgs/0'"),
        ("image.digest=latest", "at '/image/digest'"),
    ],
)
def test_schema_refuses_invalid_values(value: str, message: str) -> None:
    error = template_error(value)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("terminationGracePeriodSeconds=20",),
            "terminationGracePeriodSeconds (20) must be longer than "
            "preStopSleepSeconds + sidecar.drainTimeout (35)",
        ),
        (
            ("monitor.kind=ServiceMonitor", "service.enabled=false"),
            "monitor.kind=ServiceMonitor scrapes the Service's metrics port",
        ),
    ],
)
def test_template_refuses_inconsistent_values(sets: tuple[str, ...], message: str) -> None:
    assert message in template_error(*sets)


def test_native_sidecar_refused_before_kubernetes_1_29() -> None:
    proc = helm("template", "rel", str(CHART), "--kube-version", "1.28.0", check=False)
    assert proc.returncode != 0
    assert "sidecar.native needs Kubernetes 1.29 or later" in proc.stderr
    assert "set sidecar.native=false" in proc.stderr
    classic = helm(
        "template", "rel", str(CHART), "--kube-version", "1.28.0", "--set", "sidecar.native=false"
    )
    assert "kind: Deployment" in classic.stdout


def test_chart_app_version_is_infermeters() -> None:
    chart = yamls.load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == infermeter.__version__
    image = infermeter_container(pod_spec(render()))["image"]
    assert image.endswith(f":{infermeter.__version__}")


def test_every_value_is_documented_and_in_the_schema() -> None:
    """values.yaml and values.schema.json describe the same keys (no undocumented value)."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yamls.load((CHART / "values.yaml").read_text())

    def walk(vals: Any, node: dict[str, Any], path: str) -> None:
        if not isinstance(vals, dict) or node.get("additionalProperties") is not False:
            return
        for key, value in vals.items():
            assert key in node["properties"], f"{path}{key} is not in values.schema.json"
            walk(value, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")


# --- the sidecar in a user's own chart ------------------------------------------------------


@pytest.fixture(scope="module")
def user_chart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, ...]:
    """tests/helm/user-chart with this chart as its dependency, rendered."""
    chart = tmp_path_factory.mktemp("user") / "my-inference"
    shutil.copytree(Path(__file__).with_name("user-chart"), chart)
    shutil.copytree(CHART, chart / "charts" / "infermeter")
    out = helm("template", "rel", str(chart), "--api-versions", "monitoring.coreos.com/v1").stdout
    lint = helm("lint", "--strict", str(chart)).stdout
    assert "0 chart(s) failed" in lint
    return tuple(doc for doc in yamls.load_all(out) if doc)


def test_named_template_adds_only_the_sidecar(user_chart: tuple[Manifest, ...]) -> None:
    kinds = sorted(m["kind"] for m in user_chart)
    assert kinds == ["Deployment", "PodMonitor", "Service"]  # the dependency adds no workload
    spec = pod_spec(user_chart)
    sidecar = infermeter_container(spec)
    own = infermeter_container(
        pod_spec(
            render(
                sets=("sidecar.upstream=http://127.0.0.1:8080", "sidecar.watchProcess=llama-server")
            )
        )
    )
    assert sidecar == own  # one template, the same container in both charts
    service = one(user_chart, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "proxy"
    for manifest in user_chart:
        validate(manifest, NEWEST)
    monitor = one(user_chart, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "my-inference"}


def readme_blocks() -> dict[str, str]:
    """Code blocks of the chart README that follow a `<!-- check: NAME -->` marker."""
    text = (CHART / "README.md").read_text()
    return dict(re.findall(r"<!-- check: (\S+) -->\s*```\w*\n(.*?)```", text, re.DOTALL))


def test_readme_shows_the_user_chart_as_tested() -> None:
    blocks = readme_blocks()
    template = (
        Path(__file__).with_name("user-chart") / "templates" / "deployment.yaml"
    ).read_text()
    include = '{{- include "infermeter.sidecarContainer" .Subcharts.infermeter | nindent 8 }}'
    assert include in template
    assert include in blocks["named-template"]
    shown = yamls.load(blocks["dependency"])["dependencies"]
    tested = yamls.load((Path(__file__).with_name("user-chart") / "Chart.yaml").read_text())
    for dependency in (*shown, *tested["dependencies"]):
        dependency.pop("repository")
    assert shown == tested["dependencies"]


def test_readme_extra_containers_snippet_is_the_rendered_container() -> None:
    """Charts that take extra containers as values get a literal copy: it must stay true."""
    snippet = yamls.load(readme_blocks()["extra-init-containers"])
    (container,) = snippet["extraInitContainers"]
    assert container == infermeter_container(pod_spec(render()))


def test_tests_use_the_pinned_helm_and_fetching_is_idempotent() -> None:
    """The helm these tests ran is the one fetch-helm.sh pins; a second fetch is a no-op."""
    import hashlib
    import subprocess

    from harness.helm import helm_binary

    script = ROOT / "deploy" / "helm" / "fetch-helm.sh"
    (pinned,) = re.findall(r'^SHA256="([0-9a-f]{64})"$', script.read_text(), re.MULTILINE)
    binary = Path(helm_binary())
    assert hashlib.sha256(binary.read_bytes()).hexdigest() == pinned
    again = subprocess.run([str(script), str(binary.parent)], capture_output=True, text=True)
    assert again.returncode == 0
    assert again.stdout == ""  # already there: nothing fetched
