"""The Helm chart, linted and rendered with Helm's own Go SDK (helm-python-sdk, no helm binary), for several values.

Every rendered manifest is checked against the Kubernetes API schemas (kubernetes-validate), the pod
against the "restricted" pod security standard, the alert rules and dashboard queries with promtool,
and the rendered config with `inference-exporter check-config`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from helpers.support import REPO, require_tool

from exporter.cli import build_parser

CHART = REPO / "helm" / "inference-exporter"
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.25", kubernetes_validate.latest_version())
#: Prometheus operator kinds: kubernetes-validate has no schemas for custom resources.
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}

CASES: dict[str, dict] = {
    "defaults": {},
    "host-network": {"hostNetwork": True},
    "service-monitor-rules-dashboard": {
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "scrapeTimeout": "5s",
            "additionalLabels": {"release": "kps"},
        },
        "prometheusRule": {
            "enabled": True,
            "for": "5m",
            "additionalLabels": {"release": "kps"},
            "extraRules": [{"alert": "VllmQueueLong", "expr": "vllm_num_requests_waiting > 50", "for": "10m"}],
        },
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Inference"}},
    },
    "pod-monitor-without-service": {
        "podMonitor": {"enabled": True},
        "service": {"enabled": False},
        "prometheusRule": {"enabled": True},
    },
    "custom-config": {
        "config": {
            "prefix": "",
            "defaults": {"interval": "5s", "timeout": "2s", "retries": 1},
            "targets": [
                {
                    "name": "vllm",
                    "type": "http",
                    "url": "http://${NODE_IP}:8000/metrics",
                    "labels": {"pool": "chat", "gpu_node": "${NODE_NAME}"},
                },
                # Large integers must reach the config as integers, not 2e+06.
                {
                    "name": "sglang",
                    "type": "http",
                    "url": "http://${NODE_IP}:30000/metrics",
                    "interval": "30s",
                    "sample_limit": 2000000,
                },
            ],
        },
        "port": 9400,
        "logLevel": "debug",
        "runtimeClassName": "nvidia",
        "priorityClassName": "system-node-critical",
        "image": {"repository": "registry.example.com/inference-exporter", "digest": "sha256:" + "a" * 64},
        "extraEnv": [{"name": "TGI_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "tgi", "key": "password"}}}],
        "extraVolumes": [{"name": "tokens", "secret": {"secretName": "backend-tokens"}}],
        "extraVolumeMounts": [{"name": "tokens", "mountPath": "/etc/inference-exporter-secrets", "readOnly": True}],
    },
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict) -> dict[str, dict]:
    """The rendered objects by "Kind/name"; NOTES.txt under "NOTES"."""
    objects: dict[str, dict] = {}
    for path, text in chart.render(values, name="ie", namespace="monitoring", is_install=True).items():
        if path.endswith("NOTES.txt"):
            objects["NOTES"] = {"text": text}
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def pod_spec(objects: dict[str, dict]) -> dict:
    return objects["DaemonSet/ie-inference-exporter"]["spec"]["template"]["spec"]


def container(objects: dict[str, dict]) -> dict:
    (only,) = pod_spec(objects)["containers"]
    return only


@pytest.mark.parametrize("values", CASES.values(), ids=CASES.keys())
def test_chart_lints_without_warnings(values):
    report = helm.lint(CHART, values, strict=True, kube_version="v1.25.0")
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == [] and problems == []


@pytest.mark.parametrize("values", CASES.values(), ids=CASES.keys())
def test_every_rendered_manifest_is_valid_for_the_kubernetes_api(chart, values):
    objects = render(chart, values)
    unchecked = set()
    for key, obj in objects.items():
        if key == "NOTES":
            continue
        if obj["kind"] in OPERATOR_KINDS:
            unchecked.add(obj["kind"])
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    expected_crds = {
        kind
        for kind, part in (
            ("ServiceMonitor", "serviceMonitor"),
            ("PodMonitor", "podMonitor"),
            ("PrometheusRule", "prometheusRule"),
        )
        if values.get(part, {}).get("enabled")
    }
    assert unchecked == expected_crds


def test_kubernetes_validation_rejects_an_unknown_field(chart):
    daemonset = copy.deepcopy(render(chart, {})["DaemonSet/ie-inference-exporter"])
    daemonset["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBE_VERSIONS[-1], strict=True)


def restricted_violations(spec: dict) -> list[str]:
    """What breaks the "restricted" pod security standard (which includes "baseline") in a pod spec.

    https://kubernetes.io/docs/concepts/security/pod-security-standards/ ; Windows-only and
    AppArmor/SELinux/sysctl controls are left out: the chart sets none of them.
    """
    found = [f"{field}: true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            found.append(f"volume {volume['name']}: {', '.join(sorted(kinds - allowed_volumes))}")
    pod = spec.get("securityContext", {})
    for c in spec.get("initContainers", []) + spec["containers"]:
        context = c.get("securityContext", {})
        name = c["name"]
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if not context.get("runAsNonRoot", pod.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser", pod.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = context.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities not dropping ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities added")
        if any(port.get("hostPort") for port in c.get("ports", [])):
            found.append(f"{name}: hostPort")
    return found


def test_default_pod_meets_the_restricted_pod_security_standard(chart):
    objects = render(chart, {})
    assert restricted_violations(pod_spec(objects)) == []
    assert container(objects)["securityContext"]["readOnlyRootFilesystem"] is True


def test_host_network_leaves_the_restricted_standard_and_notes_say_so(chart):
    objects = render(chart, {"hostNetwork": True})
    assert restricted_violations(pod_spec(objects)) == ["hostNetwork: true"]
    assert pod_spec(objects)["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert '"privileged" pod security level' in objects["NOTES"]["text"]


BAD_VALUES = {
    "misspelled top-level key": ({"hostNetwrok": True}, "additional properties 'hostNetwrok' not allowed"),
    "listen in the config": (
        {"config": {"listen": ":9898"}},
        "at '/config': additional properties 'listen' not allowed",
    ),
    "port as a string": ({"port": "9898"}, "at '/port': got string, want integer"),
    "misspelled monitor key": ({"serviceMonitor": {"enabled": True, "intervall": "1m"}}, "'intervall' not allowed"),
    "duration without unit": ({"podMonitor": {"enabled": True, "interval": "30"}}, "at '/podMonitor/interval'"),
    "target without type": (
        {"config": {"targets": [{"name": "vllm"}]}},
        "at '/config/targets/0': missing property 'type'",
    ),
    "unknown log level": ({"logLevel": "verbose"}, "at '/logLevel'"),
}


@pytest.mark.parametrize(("values", "message"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_values_that_break_the_schema_are_rejected(chart, values, message):
    with pytest.raises(helm.HelmValuesError) as error:
        chart.render(values, name="ie", namespace="monitoring")
    assert message in str(error.value)


def test_both_monitors_at_once_are_rejected_with_the_reason(chart):
    with pytest.raises(helm.HelmRenderError, match="choose one, or Prometheus scrapes every exporter twice"):
        chart.render({"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}, name="ie")


@pytest.mark.parametrize("values", CASES.values(), ids=CASES.keys())
def test_rendered_config_and_command_line_are_accepted_by_the_exporter(chart, values, tmp_path):
    objects = render(chart, values)
    args = container(objects)["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "run" and parsed.listen == f":{values.get('port', 9898)}"

    config = tmp_path / "config.yaml"
    config.write_text(objects["ConfigMap/ie-inference-exporter"]["data"]["config.yaml"])
    # The variables the DaemonSet sets from the downward API, as a pod would see them.
    env = dict(os.environ, NODE_NAME="gpu-node-1", NODE_IP="10.0.0.7", POD_NAME="ie-abcde", POD_NAMESPACE="monitoring")
    defined = {entry["name"] for entry in container(objects)["env"]}
    assert {"NODE_NAME", "NODE_IP", "POD_NAME", "POD_NAMESPACE"} <= defined
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    targets = len(values.get("config", {}).get("targets", []))
    assert f"valid, {targets} target(s)" in result.stdout


def test_config_is_mounted_as_a_directory_so_updates_reach_the_pod(chart):
    objects = render(chart, {})
    config_path = Path(build_parser().parse_args(container(objects)["args"]).config)
    (mount,) = [m for m in container(objects)["volumeMounts"] if m["name"] == "config"]
    assert "subPath" not in mount and "subPathExpr" not in mount
    assert Path(mount["mountPath"]) == config_path.parent
    (volume,) = [v for v in pod_spec(objects)["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == "ie-inference-exporter"


def test_nvml_sees_all_gpus_without_requesting_any(chart):
    objects = render(chart, {"runtimeClassName": "nvidia"})
    env = {entry["name"]: entry.get("value") for entry in container(objects)["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert "nvidia.com/gpu" not in json.dumps(container(objects)["resources"])
    assert pod_spec(objects)["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(objects)["tolerations"]


def test_monitors_scrape_the_metrics_port_with_the_interval_and_timeout_from_values(chart):
    for kind, part, endpoints in (
        ("ServiceMonitor", "serviceMonitor", "endpoints"),
        ("PodMonitor", "podMonitor", "podMetricsEndpoints"),
    ):
        objects = render(chart, {part: {"enabled": True, "interval": "20s", "scrapeTimeout": "7s"}})
        monitor = objects[f"{kind}/ie-inference-exporter"]
        (endpoint,) = monitor["spec"][endpoints]
        assert (endpoint["port"], endpoint["interval"], endpoint["scrapeTimeout"]) == ("metrics", "20s", "7s")
        assert container(objects)["ports"][0]["name"] == "metrics"
        pod_labels = objects["DaemonSet/ie-inference-exporter"]["spec"]["template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_alert_rules_pass_promtool(chart, tmp_path):
    promtool = require_tool("promtool")
    rule = render(chart, CASES["service-monitor-rules-dashboard"])["PrometheusRule/ie-inference-exporter"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = rule["spec"]["groups"][0]["rules"]
    assert rules[0]["alert"] == "InferenceExporterDown" and rules[0]["expr"] == 'up{job="ie-inference-exporter"} == 0'
    shipped = yaml.safe_load((REPO / "dashboards" / "inference-exporter.rules.yml").read_text())["groups"][0]["rules"]
    assert rules[1 : 1 + len(shipped)] == shipped, (
        "the chart serves every alert of dashboards/inference-exporter.rules.yml, unchanged"
    )


def test_chart_ships_the_dashboard_and_rules_of_dashboards_unchanged(chart):
    """The chart can only read files inside itself: its copies must stay equal to dashboards/ (tested there)."""
    for shipped, copied in (
        ("inference-exporter.json", "dashboards/inference-exporter.json"),
        ("inference-exporter.rules.yml", "rules/inference-exporter.rules.yml"),
    ):
        assert (REPO / "helm" / "inference-exporter" / copied).read_text() == (
            REPO / "dashboards" / shipped
        ).read_text()
    configmap = render(chart, {"grafanaDashboard": {"enabled": True}})["ConfigMap/ie-inference-exporter-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["inference-exporter.json"]) == json.loads(
        (REPO / "dashboards" / "inference-exporter.json").read_text()
    )


def test_notes_warn_when_no_target_is_configured(chart):
    assert "values.config.targets is empty" in render(chart, {})["NOTES"]["text"]
    assert "values.config.targets is empty" not in render(chart, CASES["custom-config"])["NOTES"]["text"]


def test_image_is_the_chart_app_version_unless_pinned(chart):
    assert container(render(chart, {}))["image"] == f"inference-exporter:{chart.metadata['appVersion']}"
    pinned = container(render(chart, CASES["custom-config"]))["image"]
    assert pinned == "registry.example.com/inference-exporter@sha256:" + "a" * 64


def test_readme_values_example_installs(chart, tmp_path):
    readme = (REPO / "docs" / "deployment.md").read_text()
    example = re.search(r"`my-values\.yaml`:\n\n```yaml\n(.*?)```", readme, re.DOTALL)
    assert example, "docs/deployment.md has no my-values.yaml example"
    values = yaml.safe_load(example[1])
    objects = render(chart, values)  # the schema applies, as in `helm install`
    assert {"ServiceMonitor/ie-inference-exporter", "PrometheusRule/ie-inference-exporter"} <= objects.keys()
    assert "helm install inference-exporter ./helm/inference-exporter" in readme and "-f my-values.yaml" in readme
    config = tmp_path / "config.yaml"
    config.write_text(objects["ConfigMap/ie-inference-exporter"]["data"]["config.yaml"])
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(config)],
        capture_output=True,
        text=True,
        env=dict(os.environ, NODE_IP="10.0.0.7"),
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
