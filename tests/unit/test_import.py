"""`autoscaler import`: the guide's stalwart-hpa and KEDA's documented ScaledObject shapes become
a config that `check-config` accepts, with what has no equivalent listed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.cli import main
from autoscaler.config import load_config_data
from autoscaler.importer import ManifestError, import_documents, pod_selector

# The Stalwart clustering guide's Kubernetes example: CPU 70 % and memory 80 % of requests,
# 3-10 replicas (autoscaling/v2).
STALWART_HPA = """\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: stalwart-hpa
  namespace: mail
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: StatefulSet
    name: stalwart
  minReplicas: 3
  maxReplicas: 10
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: 70
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: 80
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 600
      policies:
        - type: Pods
          value: 1
          periodSeconds: 120
"""

# KEDA's documented shapes (ScaledObject spec, the prometheus and cron scalers), in one object.
KEDA = """\
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: smtp
  namespace: mail
spec:
  scaleTargetRef:
    name: stalwart-smtp
  pollingInterval: 15
  cooldownPeriod: 300
  minReplicaCount: 2
  maxReplicaCount: 20
  fallback:
    failureThreshold: 3
    replicas: 6
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 300
          policies:
            - type: Percent
              value: 50
              periodSeconds: 60
  triggers:
    - type: prometheus
      metadata:
        serverAddress: http://prometheus.monitoring:9090
        query: sum(rate(queue_queue_message[2m])) * 3600
        threshold: "10000"
    - type: prometheus
      metricType: Value
      metadata:
        serverAddress: http://prometheus.monitoring:9090
        query: avg(smtp_active_connections)
        threshold: "500"
        activationThreshold: "5"
    - type: cron
      metadata:
        timezone: Europe/Paris
        start: 30 7 * * 1-5
        end: 0 19 * * 1-5
        desiredReplicas: "8"
    - type: kafka
      metadata:
        topic: mail
"""


def convert(text: str) -> tuple[dict[str, Any], list[str]]:
    imported = import_documents(yaml.safe_load_all(text))
    load_config_data(imported.config, environ={})  # valid as check-config reads it
    return imported.config, imported.not_converted


def test_the_guides_stalwart_hpa() -> None:
    config, notes = convert(STALWART_HPA)
    [target] = config["targets"]
    selector = pod_selector("mail", "StatefulSet", "stalwart")
    assert selector == 'namespace="mail",pod=~"stalwart-[0-9]+"'
    assert {k: target[k] for k in ("name", "backend", "namespace", "statefulset",
                                   "min_replicas", "max_replicas")} == {
        "name": "stalwart-hpa", "backend": "kubernetes", "namespace": "mail",
        "statefulset": "stalwart", "min_replicas": 3, "max_replicas": 10}
    assert target["behavior"] == yaml.safe_load(STALWART_HPA)["spec"]["behavior"]
    cpu, memory = target["policies"]
    assert (cpu["type"], cpu["target"], memory["target"]) == ("target_value", 70.0, 80.0)
    assert cpu["query"] == (
        f'sum(rate(container_cpu_usage_seconds_total{{{selector},container!="",'
        f'container!="POD"}}[1m])) / sum(kube_pod_container_resource_requests{{{selector},'
        f'resource="cpu"}}) * 100')
    assert "container_memory_working_set_bytes" in memory["query"]
    assert 'resource="memory"' in memory["query"]
    assert config["dry_run"] is True and config["evaluation_interval"] == "15s"
    assert notes == []


@pytest.mark.parametrize(("version", "resource"), [
    pytest.param("autoscaling/v2beta2", {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 70}}, id="v2beta2"),
    pytest.param("autoscaling/v2beta1", {"name": "cpu", "targetAverageUtilization": 70},
                 id="v2beta1"),
])
def test_older_hpa_versions(version: str, resource: dict[str, Any]) -> None:
    doc = yaml.safe_load(STALWART_HPA)
    doc["apiVersion"] = version
    doc["spec"]["metrics"] = [{"type": "Resource", "resource": resource}]
    config, _ = convert(yaml.safe_dump(doc))
    [policy] = config["targets"][0]["policies"]
    assert (policy["name"], policy["target"]) == ("cpu-utilization", 70.0)


def test_hpa_v1_and_its_default() -> None:
    v1: dict[str, Any] = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
          "metadata": {"name": "imap"}, "spec": {
              "scaleTargetRef": {"kind": "Deployment", "name": "imap"}, "maxReplicas": 4,
              "targetCPUUtilizationPercentage": 60}}
    config, _ = convert(yaml.safe_dump(v1))
    [target] = config["targets"]
    assert (target["namespace"], target["deployment"], target["min_replicas"]) == (
        "default", "imap", 1)
    assert target["policies"][0]["target"] == 60.0
    assert 'pod=~"imap-[a-z0-9]+-[a-z0-9]{5}"' in target["policies"][0]["query"]
    del v1["spec"]["targetCPUUtilizationPercentage"]
    config, notes = convert(yaml.safe_dump(v1))
    assert config["targets"][0]["policies"][0]["target"] == 80.0
    assert notes == ["HorizontalPodAutoscaler default/imap: no metrics: the HPA's default, "
                     "CPU at 80 % of requests"]


def test_keda_scaled_object() -> None:
    config, notes = convert(KEDA)
    [target] = config["targets"]
    assert config["prometheus"] == {"url": "http://prometheus.monitoring:9090"}
    assert config["evaluation_interval"] == "15s"
    assert (target["deployment"], target["min_replicas"], target["max_replicas"]) == (
        "stalwart-smtp", 2, 20)
    assert (target["on_metric_error"], target["fallback_replicas"]) == ("fallback", 6)
    assert target["behavior"] == yaml.safe_load(KEDA)["spec"]["advanced"][
        "horizontalPodAutoscalerConfig"]["behavior"]
    average, value, cron = target["policies"]
    assert average == {"type": "capacity", "name": "prometheus-1",
                       "query": "sum(rate(queue_queue_message[2m])) * 3600",
                       "per_instance": 10000.0, "headroom": 1.0}
    assert value == {"type": "target_value", "name": "prometheus-2",
                     "query": "avg(smtp_active_connections)", "target": 500.0}
    assert cron == {"type": "schedule", "name": "cron", "windows": [
        {"cron": "30 7 * * 1-5", "duration": "690m", "replicas": 8,
         "timezone": "Europe/Paris"}]}
    assert [n.split(": ", 1)[1].split(" ")[0] for n in notes] == [
        "cooldownPeriod", "fallback", "metadata.activationThreshold:", "a"]
    assert "kafka trigger has no equivalent" in notes[-1]


@pytest.mark.parametrize(("annotations", "note"), [
    ({"autoscaling.keda.sh/paused-replicas": "3"},
     "ScaledObject mail/smtp: paused at 3 in KEDA (autoscaling.keda.sh/"
     "paused-replicas): to keep it, annotate the Deployment stalwart-smtp "
     'autoscaler.stalwart.io/paused-replicas: "3"'),
    ({"autoscaling.keda.sh/paused": "true"},
     "ScaledObject mail/smtp: paused in KEDA (autoscaling.keda.sh/paused): to keep "
     'it, annotate the Deployment stalwart-smtp autoscaler.stalwart.io/paused: "true"'),
], ids=["paused-replicas", "paused"])
def test_keda_pause_is_carried_over_as_a_note(annotations: dict[str, str], note: str) -> None:
    """#11 item 15: KEDA's pause annotations name their equivalent on the workload."""
    doc = yaml.safe_load(KEDA)
    doc["metadata"]["annotations"] = annotations
    _, notes = convert(yaml.safe_dump(doc))
    assert note in notes, notes
    doc["spec"]["scaleTargetRef"] = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                                     "name": "smtp"}
    _, notes = convert(yaml.safe_dump(doc))
    assert note.replace("Deployment stalwart-smtp", "Rollout smtp") in notes, notes


@pytest.mark.parametrize(("change", "note"), [
    pytest.param({"minReplicaCount": 0}, "scaling to zero has no equivalent; min_replicas 1",
                 id="scale-to-zero"),
    pytest.param({"scaleTargetRef": {"kind": "Rollout", "name": "r"}},
                 "scaleTargetRef kind Rollout", id="other-kind"),
    pytest.param({"triggers": [{"type": "cron", "metadata": {
        "start": "0 8 * * 1", "end": "0 18 * * 5", "desiredReplicas": "4"}}]},
        "a window is converted when both name one minute and hour on the same days",
        id="cron-across-days"),
])
def test_keda_shapes_listed_as_not_converted(change: dict[str, Any], note: str) -> None:
    doc = yaml.safe_load(KEDA)
    doc["spec"].update(change)
    try:
        _, notes = convert(yaml.safe_dump(doc))
    except ManifestError as exc:
        notes = [str(exc)]
    assert any(note in n for n in notes), notes


@pytest.mark.parametrize("source", ["hpa", "keda"])
def test_any_kind_with_its_api_version_becomes_a_scale_target_ref(source: str) -> None:
    ref = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "smtp"}
    if source == "keda":
        doc = yaml.safe_load(KEDA)
        doc["spec"]["scaleTargetRef"] = ref
    else:
        doc = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "smtp", "namespace": "mail"},
               "spec": {"scaleTargetRef": ref, "minReplicas": 2, "maxReplicas": 6,
                        "metrics": [{"type": "Resource", "resource": {
                            "name": "cpu", "target": {"type": "Utilization",
                                                      "averageUtilization": 70}}}]}}
    config, _ = convert(yaml.safe_dump(doc))
    [target] = config["targets"]
    assert target["scale_target_ref"] == {"api_version": "argoproj.io/v1alpha1",
                                          "kind": "Rollout", "name": "smtp"}
    assert "deployment" not in target and "statefulset" not in target
    if source == "hpa":
        assert 'pod=~"smtp-.+"' in target["policies"][0]["query"]


def test_nothing_to_convert_is_an_error() -> None:
    with pytest.raises(ManifestError,
                       match=r"Deployment \(apps/v1\) is not an HPA or a KEDA ScaledObject"):
        import_documents([{"apiVersion": "apps/v1", "kind": "Deployment"}])


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Run:
    """`autoscaler ARGV` in this process (the command's own main, as the console script
    calls it), run in tmp_path without AUTOSCALER_* variables: (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    for variable in [v for v in os.environ if v.startswith("AUTOSCALER_")]:
        monkeypatch.delenv(variable)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.mark.parametrize("manifest", [STALWART_HPA, KEDA, STALWART_HPA + "---\n" + KEDA],
                         ids=["stalwart-hpa", "keda", "both"])
def test_check_config_passes_on_the_output(tmp_path: Path, cli: Run, manifest: str) -> None:
    (tmp_path / "in.yaml").write_text(manifest)
    code, out, err = cli("import", "in.yaml")
    assert code == 0, err
    (tmp_path / "out.yaml").write_text(out)
    checked, _, checked_err = cli("check-config", "out.yaml")
    assert checked == 0, checked_err
    assert out.startswith("# Converted by `autoscaler import in.yaml` from:")
    assert ("Not converted:" in out) is (manifest is not STALWART_HPA)


@pytest.mark.parametrize(("text", "says"), [
    pytest.param("kind: [unclosed\n", "in.yaml:2: not YAML", id="not-yaml"),
    pytest.param("apiVersion: v1\nkind: ConfigMap\n", "is not an HPA or a KEDA ScaledObject",
                 id="nothing-to-convert"),
    pytest.param(STALWART_HPA.replace("maxReplicas: 10", "maxReplicas: 2"),
                 "min_replicas", id="min-above-max"),
])
def test_bad_input_exits_2_with_a_message(tmp_path: Path, cli: Run, text: str, says: str) -> None:
    (tmp_path / "in.yaml").write_text(text)
    code, out, err = cli("import", "in.yaml")
    assert code == 2 and out == ""
    assert says in err and "Traceback" not in err
